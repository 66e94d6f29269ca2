"""Face boxes for cropping: detectors (the most accurate one installed that runs offline),
square crop boxes with margin, and boxes smoothed over a video.

Detectors differ in where they put the box (dlib's is tighter than the Haar cascade's, say),
so each one's boxes are mapped onto the Haar cascade's framing: the crop margins were tuned on
it and the faces checkpoint's training clips were cut with it. `benchmarks/face_detectors.py`
measures accuracy, speed and these mappings on ../shared/datasets/faces."""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError, NoFaceError, check_count
from .native import muted_stderr
from .shots import ShotChanges

DETECT_MAX_SIDE_PX = 640  # frames are shrunk to this before detection (speed)
# a still photo where none is found at that size is looked at again at up to this: a face of
# 100 px in a 4000x3000 photo shrinks to 16 px, too small for dlib (found at 2048 px, in 1 s)
PHOTO_DETECT_SIDE_PX = 2048
MIN_FACE_FRACTION = 0.05  # smallest face side searched, as a share of the frame's longer side
FACE_MARGIN = 0.8  # the crop's side is the face's side times (1 + margin)
FACE_SHIFT_UP = 0.1  # centre the crop a little above the detected box (forehead and hair)
SFD_WEIGHTS = "s3fd-619a316812.pth"  # face-alignment's face detector, in $TORCH_HOME/hub/checkpoints
HAAR_CASCADE = "haarcascade_frontalface_alt2.xml"
# OpenCV's usual settings for the cascade: each scale 10% above the last, a face where 5
# overlapping windows agree (fewer: more false faces), none smaller than 20 px
HAAR_SCALE_STEP, HAAR_MIN_NEIGHBOURS, HAAR_MIN_SIDE_PX = 1.1, 5, 20
SFD_MIN_SCORE = 0.5  # face-alignment's own threshold for a face
# a face found on every 5th frame, boxes averaged over 15 frames (0.6 s at 25 fps): the
# crop follows the head without the jitter of single detections
TRACK_DETECT_EVERY, TRACK_SMOOTH_FRAMES = 5, 15

Box = tuple[int, int, int, int]  # x, y, w, h in pixels
# Onto the Haar cascade's framing (median over the faces both find in ../shared/datasets/faces,
# measured by benchmarks/face_detectors.py): side ratio, and centre shift in units of own side
HAAR_SCALE_DLIB, HAAR_SHIFT_Y_DLIB = 1.119, -0.103
HAAR_SCALE_MEDIAPIPE, HAAR_SHIFT_Y_MEDIAPIPE = 1.032, -0.084
MEDIAPIPE_MIN_SCORE = 0.5
WARM_UP_PX = 64  # side of the blank frame that starts mediapipe's graph
DLIB_UPSAMPLE = 1  # dlib's HOG window is 80 px: upsample once to find smaller faces
DLIB_SURE_SCORE = 0.5  # in a photo, a weaker dlib detection beside a stronger one is none


def parse_crop(text: str | Box | None, option: str = "--crop") -> str | Box | None:
    """--crop: 'auto' (face), 'none' (centred square), 'x,y,w,h' in pixels (or that box as a
    tuple), or None (not given: the checkpoint decides). A box must be square: the frames
    the networks take are, and another shape would come out stretched."""
    if text is None or isinstance(text, str) and text.lower() in ("auto", "none"):
        return text.lower() if text else None
    try:
        values = text.split(",") if isinstance(text, str) else text
        x, y, w, h = (_whole(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{option} expects auto, none or x,y,w,h in pixels, "
                         f"got {text!r}") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise InputError(f"{option} box {text!r} must have x, y >= 0 and w, h > 0")
    if w != h:
        raise InputError(f"{option} box {text!r} must be square (w = h): the frames are, and "
                         f"a {w}x{h} box would come out stretched")
    return x, y, w, h


def _whole(value) -> int:
    """A box's coordinate as an int; ValueError for a fraction of a pixel (int() would cut
    it off without a word)."""
    if isinstance(value, bool) or float(value) != int(float(value)):
        raise ValueError(value)
    return int(value)


@dataclass(frozen=True)
class Framing:
    """Maps a detector's box onto the Haar cascade's: side times ``scale``, centre moved by
    (``shift_x``, ``shift_y``) of the detector's side."""

    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0

    def apply(self, box: Box) -> Box:
        """The detector's box (x, y, w, h) as the square the Haar cascade would give."""
        x, y, w, h = box
        side = (w + h) / 2 * self.scale
        cx, cy = x + w / 2 + self.shift_x * w, y + h / 2 + self.shift_y * h
        return (int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side)),
                int(round(side)))


class Detector:
    """Face boxes in an RGB uint8 frame (H, W, 3), in the Haar cascade's framing."""

    name = "detector"
    framing = Framing()
    side_px = DETECT_MAX_SIDE_PX  # frames are shrunk to this where the detector shrinks them
    shrinks = False  # Haar and dlib do (for speed); mediapipe and SFD take frames as they are
    sure_score: float | None = None  # below this a detection is likely no face (None: all are)

    def raw(self, frame: np.ndarray) -> list[Box]:
        """Boxes (x, y, w, h) in pixels, in the detector's own framing."""
        raise NotImplementedError

    def __call__(self, frame: np.ndarray) -> list[Box]:
        return [self.framing.apply(box) for box in self.raw(frame)]

    def raw_scored(self, frame: np.ndarray) -> list[tuple[Box, float]]:
        """raw's boxes, each with the detector's confidence, compared with sure_score (here
        none is given: infinity)."""
        return [(box, math.inf) for box in self.raw(frame)]

    def in_photo(self, image: np.ndarray) -> list[Box]:
        """The faces in a still photo, largest first, leaving out detections below
        sure_score unless there is no other. Where none is found at side_px (by a detector
        that shrinks frames), they are looked for again at up to PHOTO_DETECT_SIDE_PX (one
        photo can take the second look; a video's frames not)."""
        found = self.raw_scored(image)
        if not found and self.shrinks and max(image.shape[:2]) > self.side_px:
            usual, self.side_px = self.side_px, PHOTO_DETECT_SIDE_PX
            try:
                found = self.raw_scored(image)
            finally:
                self.side_px = usual
        sure = [box for box, score in found if self.sure_score is None or
                score >= self.sure_score] or [box for box, _ in found]
        # among faces, the largest: two real faces' scores say nothing of which one is meant
        sure.sort(key=lambda box: -box[2] * box[3])
        return [self.framing.apply(box) for box in sure]


def _shrink(frame: np.ndarray, side_px: int) -> tuple[np.ndarray, float]:
    """The frame at most ``side_px`` on its longer side, and the scale applied."""
    scale = min(1.0, side_px / max(frame.shape[:2]))
    if scale == 1:
        return np.ascontiguousarray(frame), 1.0
    return cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale


class HaarDetector(Detector):
    """OpenCV's frontal-face Haar cascade, shipped inside opencv-python: works offline."""

    name = "opencv-haar"
    shrinks = True

    def __init__(self):
        data = getattr(cv2, "data", None)
        path = Path(data.haarcascades) / HAAR_CASCADE if data else None
        if path is None or not path.is_file():
            raise InputError("OpenCV's face cascades are missing (opencv-python 5 dropped them; "
                             "install opencv-python<5)")
        self.cascade = cv2.CascadeClassifier(str(path))

    def raw(self, frame: np.ndarray) -> list[Box]:
        small, scale = _shrink(frame, self.side_px)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        side = max(HAAR_MIN_SIDE_PX, int(MIN_FACE_FRACTION * max(gray.shape)))
        found = self.cascade.detectMultiScale(cv2.equalizeHist(gray), scaleFactor=HAAR_SCALE_STEP,
                                              minNeighbors=HAAR_MIN_NEIGHBOURS,
                                              minSize=(side, side))
        return [tuple(int(round(v / scale)) for v in box) for box in found]


class MediapipeFaceDetector(Detector):
    """mediapipe 0.10.14's BlazeFace full-range model (a .tflite inside its wheel)."""

    name = "mediapipe-blazeface"
    framing = Framing(HAAR_SCALE_MEDIAPIPE, 0.0, HAAR_SHIFT_Y_MEDIAPIPE)

    def __init__(self):
        with muted_stderr():
            import mediapipe as mp

            self.net = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=MEDIAPIPE_MIN_SCORE)
            # its graph starts (and logs) on first use, possibly from another thread: do
            # that here, while muted
            self.net.process(np.zeros((WARM_UP_PX, WARM_UP_PX, 3), np.uint8))

    def raw(self, frame: np.ndarray) -> list[Box]:
        height, width = frame.shape[:2]
        with muted_stderr():
            found = self.net.process(np.ascontiguousarray(frame)).detections or []
        boxes = [d.location_data.relative_bounding_box for d in found]  # relative to the frame
        return [(int(b.xmin * width), int(b.ymin * height), int(b.width * width),
                 int(b.height * height)) for b in boxes]


class DlibHogDetector(Detector):
    """dlib's HOG + linear SVM frontal-face detector, built into dlib (dlib-bin): no model file."""

    name = "dlib-hog"
    framing = Framing(HAAR_SCALE_DLIB, 0.0, HAAR_SHIFT_Y_DLIB)
    shrinks = True
    # its SVM's margin: a face scores 1 to 3, a shirt's round patch 0.1 (the astronaut's)
    sure_score = DLIB_SURE_SCORE

    def __init__(self):
        import dlib

        self.detect = dlib.get_frontal_face_detector()

    def raw(self, frame: np.ndarray) -> list[Box]:
        return [box for box, _ in self.raw_scored(frame)]

    def raw_scored(self, frame: np.ndarray) -> list[tuple[Box, float]]:
        small, scale = _shrink(frame, self.side_px)
        found, scores, _ = self.detect.run(small, DLIB_UPSAMPLE, 0.0)
        return [(tuple(int(round(v / scale)) for v in (r.left(), r.top(), r.width(),
                                                          r.height())), float(score))
                for r, score in zip(found, scores)]


class FaceAlignmentDetector(Detector):
    """face-alignment's SFD detector; used only when its weights are already on disk. Its
    framing against the Haar cascade is unmeasured (the weights cannot be downloaded here)."""

    name = "face-alignment-sfd"

    def __init__(self):
        import face_alignment  # noqa: F401  (the optional extra)
        from face_alignment.detection.sfd import FaceDetector

        self.detector = FaceDetector(device="cpu", path_to_detector=str(sfd_weights_path()))

    def raw(self, frame: np.ndarray) -> list[Box]:
        found = self.detector.detect_from_image(frame[..., ::-1].copy())  # it expects BGR
        return [(int(x0), int(y0), int(x1 - x0), int(y1 - y0))
                for x0, y0, x1, y1, score in found if score > SFD_MIN_SCORE]


def sfd_weights_path() -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return torch_home / "hub" / "checkpoints" / SFD_WEIGHTS


def get_detector() -> Detector:
    """The most accurate detector that is installed and runs offline, in this order:
    face-alignment's SFD (only when its weights are already on disk: it is never asked to
    download), mediapipe's BlazeFace, dlib's HOG, OpenCV's Haar cascade (always there).
    On 116 frames of ../shared/datasets/faces the last three find all 115 faces they agree on;
    with the picture shrunk to 35% of its frame (small faces) 116, 115 and 93 of 116, at 13, 96
    and 23 ms a frame (benchmarks/face_detectors.py)."""
    if sfd_weights_path().is_file():
        try:
            return FaceAlignmentDetector()
        except Exception:  # extra not installed or incompatible: fall back, never fail here
            pass
    for module, make in (("mediapipe", MediapipeFaceDetector), ("dlib", DlibHogDetector)):
        if importlib.util.find_spec(module) is not None:
            try:
                return make()
            except Exception:  # a broken install: the next detector will do
                pass
    return HaarDetector()


def largest(boxes: list[Box]) -> Box | None:
    return max(boxes, key=lambda b: b[2] * b[3]) if boxes else None


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter = max(0, min(ax1, bx1) - max(a[0], b[0])) * max(0, min(ay1, by1) - max(a[1], b[1]))
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def nearest(boxes: list[Box], to: Box) -> Box | None:
    """The box whose centre is nearest ``to``'s."""
    centre = lambda b: (b[0] + b[2] / 2, b[1] + b[3] / 2)  # noqa: E731
    (x, y) = centre(to)
    return min(boxes, key=lambda b: (centre(b)[0] - x) ** 2 + (centre(b)[1] - y) ** 2,
               default=None)


def crop_box(face: Box, height: int, width: int, margin: float = FACE_MARGIN) -> Box:
    """A square around ``face`` with margin, moved (and if needed shrunk) to fit the frame."""
    x, y, w, h = face
    side = int(round(max(w, h) * (1 + margin)))
    return fit_square(x + w / 2, y + h / 2 - FACE_SHIFT_UP * h, side, height, width)


def fit_square(cx: float, cy: float, side: int, height: int, width: int) -> Box:
    """The square of ``side`` pixels centred on (cx, cy), moved (and if needed shrunk) to lie
    inside a frame of height x width."""
    side = min(side, height, width)
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, side, side


@dataclass
class BoxTrack:
    """Per-frame crop boxes for a video, smoothed so the crop does not jitter."""

    boxes: np.ndarray  # (T, 4) float: x, y, side, side
    found: tuple[int, ...] = ()  # the frames whose detection found the face

    def __getitem__(self, index: int) -> Box:
        x, y, w, h = self.boxes[min(index, len(self.boxes) - 1)]
        return int(round(x)), int(round(y)), int(round(w)), int(round(h))


def smooth_boxes(found: dict[int, Box], count: int, height: int, width: int,
                 window: int, cuts: Sequence[int] = ()) -> BoxTrack:
    """Interpolate detections (frame index -> crop box) over ``count`` frames, then average
    over ``window`` frames, within each shot (``cuts``: the frames that start a new one,
    where the box jumps rather than glide across); a single fixed size (the median) keeps
    the framing steady. A shot without a detection holds the box of the one before (else
    after) it."""
    if not found:
        raise NoFaceError("no face found")
    bounds = [0, *cuts, count]
    centres, filled = np.zeros((count, 2)), np.zeros(count, bool)
    for start, end in zip(bounds, bounds[1:]):
        keys = [k for k in sorted(found) if start <= k < end]
        if keys:
            centres[start:end] = _glide(found, keys, start, end, window)
            filled[start:end] = True
    for start, end in zip(bounds, bounds[1:]):
        if not filled[start]:
            before = np.flatnonzero(filled[:start])
            source = before[-1] if before.size else np.flatnonzero(filled)[0]
            centres[start:end] = centres[source]
    # whole pixels, so that x and y, clamped to the frame's edge, round inside it too
    side = float(min(round(np.median([box[2] for box in found.values()])), width, height))
    x = np.clip(centres[:, 0] - side / 2, 0, width - side)
    y = np.clip(centres[:, 1] - side / 2, 0, height - side)
    return BoxTrack(np.stack([x, y, np.full(count, side), np.full(count, side)],
                             axis=1))  # (T, 4): x, y, w, h


def _glide(found: dict[int, Box], keys: list[int], start: int, end: int,
           window: int) -> np.ndarray:
    """The box centres of frames start..end-1 from the detections at ``keys`` among them,
    interpolated, then averaged over ``window`` frames: (end - start, 2)."""
    values = np.array([found[k] for k in keys], dtype=float)  # (N, 4)
    frames = np.arange(start, end)
    centres = np.stack([np.interp(frames, keys, values[:, 0] + values[:, 2] / 2),
                        np.interp(frames, keys, values[:, 1] + values[:, 3] / 2)],
                       axis=1)  # (T, 2): x, y
    if window > 1 and len(frames) > 1:
        kernel = np.ones(window) / window
        padded = np.pad(centres, ((window // 2, window - 1 - window // 2), (0, 0)), mode="edge")
        centres = np.stack([np.convolve(padded[:, i], kernel, mode="valid")
                            for i in (0, 1)], 1)  # (T, 2)
    return centres


class FaceFollower:
    """Which of each detection's faces is the one followed: the largest at first (and after
    restart, at a cut), then the nearest to where it was (of two people, the larger by a few
    pixels changes from frame to frame). A face elsewhere (not overlapping it) is taken only
    once the followed one has been missed at two detections in a row: at one it may only
    have turned away from a frontal detector. The box then jumps, from the first miss."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.last: Box | None = None  # the face followed, as last detected
        self.missed_at: int | None = None  # the first of the detections in a row that missed it

    def __call__(self, index: int, faces: list[Box]) -> tuple[Box | None, int | None]:
        """The face followed among ``faces`` (detected at frame ``index``), or None; and the
        frame the box jumps from, where it has moved to another face."""
        face = largest(faces) if self.last is None else nearest(faces, self.last)
        elsewhere = face is not None and self.last is not None and iou(face, self.last) == 0
        if face is None or elsewhere and self.missed_at is None:
            if self.last is not None and self.missed_at is None:
                self.missed_at = index
            return None, None
        jumped_at = self.missed_at if elsewhere else None
        self.last, self.missed_at = face, None
        return face, jumped_at


def track_faces(frames: Iterable[np.ndarray], detector, every: int = TRACK_DETECT_EVERY,
                window: int = TRACK_SMOOTH_FRAMES) -> tuple[BoxTrack, int]:
    """Crop boxes for every frame of a video, detecting on every ``every``-th frame.
    Returns the track and the number of frames."""
    for value, what in ((every, "every"), (window, "window")):
        check_count(value, what, 1)
    found: dict[int, Box] = {}
    count, shape, cuts, shot_changes, follow = 0, None, [], ShotChanges(), FaceFollower()
    for index, frame in enumerate(frames):
        count, shape = index + 1, frame.shape
        cut = shot_changes(frame)
        if cut:  # a new shot: the box jumps there, to the largest face of it
            cuts.append(index)
            follow.restart()
        if index % every == 0 or cut:
            face, jumped_at = follow(index, detector(frame))
            if jumped_at is not None:
                cuts.append(jumped_at)
            if face is not None:
                found[index] = crop_box(face, *frame.shape[:2])
    if not found:
        raise NoFaceError("no face found in the video")
    track = smooth_boxes(found, count, shape[0], shape[1], window, cuts)
    track.found = tuple(found)
    return track, count
