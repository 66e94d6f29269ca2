"""Face boxes for cropping: detectors (face-alignment when its weights are local, else OpenCV's
bundled Haar cascade), square crop boxes with margin, and boxes smoothed over a video."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError

DETECT_MAX_SIDE_PX = 640  # frames are shrunk to this before detection (speed)
MIN_FACE_FRACTION = 0.05  # smallest face side searched, as a share of the frame's longer side
FACE_MARGIN = 0.8  # the crop's side is the face's side times (1 + margin)
FACE_SHIFT_UP = 0.1  # centre the crop a little above the detected box (forehead and hair)
SFD_WEIGHTS = "s3fd-619a316812.pth"  # face-alignment's face detector, in $TORCH_HOME/hub/checkpoints
HAAR_CASCADE = "haarcascade_frontalface_alt2.xml"  # 104/104 frames found on ../shared faces

Box = tuple[int, int, int, int]  # x, y, w, h in pixels


class HaarDetector:
    """OpenCV's frontal-face Haar cascade, shipped inside opencv-python: works offline."""

    name = "opencv-haar"

    def __init__(self):
        data = getattr(cv2, "data", None)
        path = Path(data.haarcascades) / HAAR_CASCADE if data else None
        if path is None or not path.is_file():
            raise InputError("OpenCV's face cascades are missing (opencv-python 5 dropped them; "
                             "install opencv-python<5)")
        self.cascade = cv2.CascadeClassifier(str(path))

    def __call__(self, frame: np.ndarray) -> list[Box]:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, DETECT_MAX_SIDE_PX / max(gray.shape))
        if scale < 1:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        side = max(20, int(MIN_FACE_FRACTION * max(gray.shape)))
        found = self.cascade.detectMultiScale(cv2.equalizeHist(gray), scaleFactor=1.1,
                                              minNeighbors=5, minSize=(side, side))
        return [tuple(int(round(v / scale)) for v in box) for box in found]


class FaceAlignmentDetector:
    """face-alignment's SFD detector; used only when its weights are already on disk."""

    name = "face-alignment-sfd"

    def __init__(self):
        import face_alignment  # noqa: F401  (the optional extra)
        from face_alignment.detection.sfd import FaceDetector

        self.detector = FaceDetector(device="cpu", path_to_detector=str(sfd_weights_path()))

    def __call__(self, frame: np.ndarray) -> list[Box]:
        found = self.detector.detect_from_image(frame[..., ::-1].copy())  # it expects BGR
        return [(int(x0), int(y0), int(x1 - x0), int(y1 - y0))
                for x0, y0, x1, y1, score in found if score > 0.5]


def sfd_weights_path() -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return torch_home / "hub" / "checkpoints" / SFD_WEIGHTS


def get_detector():
    """The most accurate detector usable offline: face-alignment's SFD when installed with its
    weights present locally (it is never asked to download), else OpenCV's Haar cascade."""
    if sfd_weights_path().is_file():
        try:
            return FaceAlignmentDetector()
        except Exception:  # extra not installed or incompatible: fall back, never fail here
            pass
    return HaarDetector()


def largest(boxes: list[Box]) -> Box | None:
    return max(boxes, key=lambda b: b[2] * b[3]) if boxes else None


def crop_box(face: Box, height: int, width: int, margin: float = FACE_MARGIN) -> Box:
    """A square around ``face`` with margin, moved (and if needed shrunk) to fit the frame."""
    x, y, w, h = face
    side = int(round(max(w, h) * (1 + margin)))
    side = min(side, height, width)
    cx, cy = x + w / 2, y + h / 2 - FACE_SHIFT_UP * h
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, side, side


@dataclass
class BoxTrack:
    """Per-frame crop boxes for a video, smoothed so the crop does not jitter."""

    boxes: np.ndarray  # (T, 4) float: x, y, side, side

    def __getitem__(self, index: int) -> Box:
        x, y, w, h = self.boxes[min(index, len(self.boxes) - 1)]
        return int(round(x)), int(round(y)), int(round(w)), int(round(h))


def smooth_boxes(found: dict[int, Box], count: int, height: int, width: int,
                 window: int) -> BoxTrack:
    """Interpolate detections (frame index -> crop box) over ``count`` frames, then average
    over ``window`` frames; a single fixed size (the median) keeps the framing steady."""
    if not found:
        raise InputError("no face found")
    keys = np.array(sorted(found))
    values = np.array([found[k] for k in keys], dtype=float)  # (N, 4)
    frames = np.arange(count)
    centres = np.stack([np.interp(frames, keys, values[:, 0] + values[:, 2] / 2),
                        np.interp(frames, keys, values[:, 1] + values[:, 3] / 2)], axis=1)
    if window > 1 and count > 1:
        kernel = np.ones(window) / window
        padded = np.pad(centres, ((window // 2, window - 1 - window // 2), (0, 0)), mode="edge")
        centres = np.stack([np.convolve(padded[:, i], kernel, mode="valid") for i in (0, 1)], 1)
    side = float(np.median(values[:, 2]))
    x = np.clip(centres[:, 0] - side / 2, 0, width - side)
    y = np.clip(centres[:, 1] - side / 2, 0, height - side)
    return BoxTrack(np.stack([x, y, np.full(count, side), np.full(count, side)], axis=1))


def track_faces(frames: Iterable[np.ndarray], detector, every: int = 5,
                window: int = 15) -> tuple[BoxTrack, int]:
    """Crop boxes for every frame of a video, detecting on every ``every``-th frame.
    Returns the track and the number of frames."""
    found: dict[int, Box] = {}
    count, shape = 0, None
    for index, frame in enumerate(frames):
        count, shape = index + 1, frame.shape
        if index % every == 0:
            face = largest(detector(frame))
            if face is not None:
                found[index] = crop_box(face, *frame.shape[:2])
    if not found:
        raise InputError("no face found in the video")
    return smooth_boxes(found, count, shape[0], shape[1], window), count
