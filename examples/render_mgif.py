"""Render the mgif example: two flat cartoon animals on white, in the style of MGif.

The source is a still, stocky green animal; the driving video a slimmer brown one trotting in
place (legs swinging, head bobbing, tail wagging). Drawn by this script, so the project ships
no third-party data.
    python examples/render_mgif.py
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from monkeyanim.videowriter import VideoWriter

SIZE_PX, FRAMES, FPS = 128, 24, 12
HERE = Path(__file__).parent / "mgif"
WHITE = (255, 255, 255)


@dataclass
class Animal:
    colour: tuple[int, int, int]  # RGB
    body: tuple[int, int]  # half axes of the body ellipse, px
    leg_px: int
    head_px: int


def draw(animal: Animal, phase: float) -> np.ndarray:
    """One frame (RGB uint8); ``phase`` in [0, 1) runs through one stride."""
    frame = np.full((SIZE_PX, SIZE_PX, 3), WHITE, np.uint8)
    swing = np.sin(2 * np.pi * phase)
    cx, cy = 60, 64 + int(2 * abs(swing))
    (ax, ay), outline = animal.body, (40, 40, 40)
    for hip, sign in ((cx - ax + 8, 1), (cx + ax - 8, -1)):  # hind and front legs
        for offset in (-1, 1):
            angle = 0.45 * swing * sign * offset
            foot = (int(hip + animal.leg_px * np.sin(angle)),
                    int(cy + animal.leg_px * np.cos(angle)))
            cv2.line(frame, (hip, cy), foot, animal.colour, 7, cv2.LINE_AA)
    tail = (cx - ax - 14, cy - 14 + int(8 * swing))
    cv2.line(frame, (cx - ax + 2, cy - 4), tail, animal.colour, 4, cv2.LINE_AA)
    cv2.ellipse(frame, (cx, cy), (ax, ay), 0, 0, 360, animal.colour, -1, cv2.LINE_AA)
    head = (cx + ax + 6, cy - ay - 4 + int(4 * swing))
    cv2.line(frame, (cx + ax - 6, cy - 4), head, animal.colour, 9, cv2.LINE_AA)
    cv2.circle(frame, head, animal.head_px, animal.colour, -1, cv2.LINE_AA)
    cv2.circle(frame, (head[0] + 4, head[1] - 3), 2, outline, -1, cv2.LINE_AA)  # eye
    return frame


def main() -> None:
    HERE.mkdir(exist_ok=True)
    source = draw(Animal((90, 170, 80), (30, 16), 26, 12), 0.0)
    cv2.imwrite(str(HERE / "source.png"), source[..., ::-1])
    trotter = Animal((150, 95, 50), (26, 13), 30, 10)
    with VideoWriter(HERE / "driving.mp4", FPS) as writer:
        for t in range(FRAMES):
            writer.write(draw(trotter, t / 12))


if __name__ == "__main__":
    main()
