"""Render the shapes example: a still square (source) and a moving disc (driving video).

In the style of the Monkey-Net authors' synthetic `shapes` set (one flat-coloured shape on
black, 64x64, 32 frames), drawn by this script so the project ships no third-party data.
    python examples/render_shapes.py
"""

from pathlib import Path

import cv2
import numpy as np

from monkeyanim.videowriter import VideoWriter

SIZE_PX, FRAMES, FPS = 64, 32, 12
HERE = Path(__file__).parent / "shapes"


def disc_frame(t: int) -> np.ndarray:
    """An orange disc going right and down, then back (RGB, uint8)."""
    phase = np.sin(np.pi * t / (FRAMES - 1))
    centre = (int(12 + 38 * phase), int(14 + 30 * phase))
    frame = np.zeros((SIZE_PX, SIZE_PX, 3), np.uint8)
    cv2.circle(frame, centre, 4, (200, 90, 30), -1, cv2.LINE_AA)
    return frame


def main() -> None:
    HERE.mkdir(exist_ok=True)
    source = np.zeros((SIZE_PX, SIZE_PX, 3), np.uint8)
    cv2.rectangle(source, (10, 12), (18, 20), (120, 210, 130), -1)
    cv2.imwrite(str(HERE / "source.png"), source[..., ::-1])
    with VideoWriter(HERE / "driving.mp4", FPS) as writer:
        for t in range(FRAMES):
            writer.write(disc_frame(t))


if __name__ == "__main__":
    main()
