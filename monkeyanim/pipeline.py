"""Animation and reconstruction on tensors (no file IO): keypoint transfer and batched generation."""

from __future__ import annotations

import torch

from .models import Keypoints


def relative_keypoints(kp_source: Keypoints, kp_driving: Keypoints,
                       kp_driving_first: Keypoints, scale: float = 1.0) -> Keypoints:
    """Paper Eq. 7: move the source keypoints by the driving motion since the first frame.

    kp_source (1, K, 2) or (K, 2); kp_driving (T, K, 2); kp_driving_first (1, K, 2) or (K, 2).
    The covariances stay the driving ones, as in the authors' code. ``scale`` multiplies the
    displacement (the authors' ``movement_mult``).
    """
    mean = (kp_driving.mean - kp_driving_first.mean) * scale + kp_source.mean  # (T, K, 2)
    return Keypoints(mean, kp_driving.covar)


def absolute_keypoints(kp_driving: Keypoints) -> Keypoints:
    """Absolute transfer: the driving keypoints unchanged."""
    return kp_driving


def stack(frames: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(frames) if frames else torch.empty(0)
