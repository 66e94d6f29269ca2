"""Body metrics of the paper (AKD, MKR) with mediapipe 0.10.14's 33-point pose model, which
ships inside its wheel and runs offline (`pip install "monkeyanim[body]"`)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import cv2
import numpy as np

from .native import muted_stderr

POSE_SIDE_PX = 256  # frames are enlarged to this before the pose model (trained on larger people)
# grey border added on each side, as a share of the longer side: people who fill the frame
# (Tai-Chi, actions) are found in 41 of 41 sampled Tai-Chi frames with it, 34 without
POSE_PAD = 0.25
PAD_GREY = (127, 127, 127)
VISIBLE = 0.5  # a landmark counts as detected when mediapipe's visibility is above this
POSE_POINTS = 33
MEDIAPIPE_VERSION = "0.10.14"  # later releases dropped the bundled solution models


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("mediapipe") is None:
        return (f"needs body keypoints: pip install \"monkeyanim[body]\" "
                f"(mediapipe {MEDIAPIPE_VERSION})")
    return None


class MediapipeBody:
    """The 33 pose landmarks of the most prominent person in a frame."""

    name = "mediapipe-pose-33"

    def __init__(self):
        with muted_stderr():
            import mediapipe as mp

            # static_image_mode: every frame alone (real and generated frames alternate here)
            self.net = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                              min_detection_confidence=0.5)
            self.net.process(np.zeros((POSE_SIDE_PX, POSE_SIDE_PX, 3), np.uint8))  # start it

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB -> (33, 3) float64: x, y in pixels of ``frame``, visibility in
        [0, 1]; None when no person is found."""
        pad = int(POSE_PAD * max(frame.shape[:2]))
        padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=PAD_GREY)
        scale = POSE_SIDE_PX / max(padded.shape[:2])
        image = cv2.resize(padded, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) \
            if scale > 1 else padded
        with muted_stderr():
            found = self.net.process(image).pose_landmarks
        if found is None:
            return None
        height, width = padded.shape[:2]  # landmarks are relative to the padded frame
        return np.array([[p.x * width - pad, p.y * height - pad, p.visibility]
                         for p in found.landmark])

    def close(self) -> None:
        self.net.close()


@dataclass
class BodyScores:
    """Running sums of AKD (pixels, over landmarks detected in both frames) and MKR (share of
    the real frame's detected landmarks missing in the generated one)."""

    distances: list[float] = field(default_factory=list)
    real_found: int = 0
    missing: int = 0

    def add(self, real: np.ndarray | None, generated: np.ndarray | None) -> None:
        if real is None:
            return  # the paper counts only keypoints found in the real frame
        seen = real[:, 2] > VISIBLE  # (33,)
        kept = seen & (generated[:, 2] > VISIBLE) if generated is not None else seen & False
        self.real_found += int(seen.sum())
        self.missing += int((seen & ~kept).sum())
        if kept.any():
            gaps = np.linalg.norm(real[kept, :2] - generated[kept, :2], axis=1)  # (N,)
            self.distances.extend(gaps.tolist())

    def result(self) -> dict[str, float | str]:
        if not self.real_found:
            reason = "no body keypoints found in the real frames"
            return {"akd": reason, "mkr": reason}
        mkr = self.missing / self.real_found
        if not self.distances:
            return {"akd": "no body keypoints found in any generated frame", "mkr": mkr}
        return {"akd": float(np.mean(self.distances)), "mkr": mkr}
