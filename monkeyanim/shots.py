"""Shot changes (a cut from one scene to another) in a stream of frames, by colour: where a
face track must end (crop) or a crop box jump rather than glide (animate's face crops)."""

from __future__ import annotations

import cv2
import numpy as np

SHOT_CHANGE_CORRELATION = 0.6  # histogram correlation of consecutive frames below this: a cut
HISTOGRAM_SIDE_PX = 64  # frames are shrunk to this before their colours are counted
HISTOGRAM_BINS = [8, 8, 8]  # hue, saturation, value


def histogram(frame: np.ndarray) -> np.ndarray:
    """The normalised HSV histogram of an RGB uint8 frame (H, W, 3), flattened (512,)."""
    small = cv2.resize(frame, (HISTOGRAM_SIDE_PX, HISTOGRAM_SIDE_PX), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, HISTOGRAM_BINS, [0, 180, 0, 256, 0, 256])
    return cv2.normalize(hist, hist).flatten()


class ShotChanges:
    """Called with each frame in turn: whether a new shot starts at it (never at the first)."""

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> bool:
        current = histogram(frame)
        cut = self.previous is not None and cv2.compareHist(
            self.previous, current, cv2.HISTCMP_CORREL) < SHOT_CHANGE_CORRELATION
        self.previous = current
        return bool(cut)
