"""Cut the actions example from OpenCV's sample clip `vtest.avi` (Debian package opencv-doc).

Source: a man standing on the grass in the first frame. Driving: from frame 395, another man
standing, turning and moving his arms in the car park, seen through a fixed square window, so
that, as in the authors' actions set, the camera and background stay still and only the person
moves.

    apt-get download opencv-doc && dpkg -x opencv-doc_*.deb opencv-doc
    python examples/cut_actions.py opencv-doc/usr/share/doc/opencv-doc/examples/data/vtest.avi
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

from monkeyanim.errors import MonkeyAnimError
from monkeyanim.video import open_video
from monkeyanim.videowriter import VideoWriter

HERE = Path(__file__).parent / "actions"
WINDOW_PX = 128  # about 1.3x a person's height in vtest.avi, as in the actions set
OUT_PX = 128
SOURCE_CENTRE = (268, 262)  # the man standing left of the lamp post, frame 0
DRIVING_CENTRE, DRIVING_START = (312, 246), 395  # alone and in place for 60 frames
FRAMES = 60
FPS = 10  # vtest.avi's rate


def square(frame: np.ndarray, centre: tuple[int, int]) -> np.ndarray:
    """The WINDOW_PX square around ``centre`` (x, y), resized to OUT_PX."""
    x, y = (c - WINDOW_PX // 2 for c in centre)
    patch = frame[y:y + WINDOW_PX, x:x + WINDOW_PX]
    return cv2.resize(patch, (OUT_PX, OUT_PX), interpolation=cv2.INTER_AREA)


def main(vtest: Path) -> None:
    HERE.mkdir(exist_ok=True)
    frames = open_video(vtest).frames()
    with VideoWriter(HERE / "driving.mp4", FPS) as writer:
        for index, frame in enumerate(frames):
            if index == 0:
                cv2.imwrite(str(HERE / "source.png"), square(frame, SOURCE_CENTRE)[..., ::-1])
            if DRIVING_START <= index < DRIVING_START + FRAMES:
                writer.write(square(frame, DRIVING_CENTRE))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vtest", type=Path, help="OpenCV's vtest.avi (opencv-doc)")
    arguments = parser.parse_args()
    try:
        main(arguments.vtest)
    except MonkeyAnimError as error:  # a missing or unreadable input: one line
        raise SystemExit(f"error: {error}") from None
