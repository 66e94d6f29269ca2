"""Unsupervised keypoint detector: heatmaps -> Gaussian mean and covariance (paper Eq. 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import KPDetectorConfig, KpVariance
from .blocks import Hourglass, downscale, make_coordinate_grid

HEATMAP_EPS = 1e-7  # the authors add it to every heatmap value so variances never vanish


@dataclass(eq=False)  # compared and hashed by identity: == on tensors gives a tensor
class Keypoints:
    """K keypoints per frame.

    mean:  (..., K, 2) float, coordinates in [-1, 1], x first.
    covar: (..., K, 2, 2) for 'matrix' variance, (..., K, 1, 1) for 'single', None when fixed.
    """

    mean: torch.Tensor
    covar: torch.Tensor | None = None

    def __getitem__(self, index) -> Keypoints:
        """Index the leading (frame) dimensions: ``kp[2:5]`` keeps frames 2..4."""
        return Keypoints(self.mean[index], None if self.covar is None else self.covar[index])

    def __len__(self) -> int:
        """The size of the leading dimension: frames for (T, K, 2) means, K for one frame's
        (K, 2)."""
        return self.mean.shape[0]

    def to(self, *args, **kwargs) -> Keypoints:
        """Both tensors moved or cast as ``torch.Tensor.to`` would."""
        return Keypoints(self.mean.to(*args, **kwargs),
                         None if self.covar is None else self.covar.to(*args, **kwargs))

    def float(self) -> Keypoints:
        """Both tensors as float32 (keypoint statistics stay so under autocast: they feed
        exp(), which bf16 would coarsen)."""
        return self.to(torch.float32)

    def detach(self) -> Keypoints:
        """Both tensors cut from the autograd graph."""
        return Keypoints(self.mean.detach(), None if self.covar is None else self.covar.detach())

    @staticmethod
    def cat(items: list[Keypoints]) -> Keypoints:
        """Concatenated along the leading (frame) dimension; ValueError for none, or for
        some with covariances and some without."""
        covars = [k.covar for k in items]
        if not items or len({c is None for c in covars}) > 1:
            raise ValueError("Keypoints.cat takes one or more Keypoints, all with covariances "
                             "or all without")
        covar = None if covars[0] is None else torch.cat(covars)  # (T1 + T2 ..., K, 2, 2)
        return Keypoints(torch.cat([k.mean for k in items]), covar)  # mean (T1 + T2 ..., K, 2)


def smallest_singular(matrix: torch.Tensor) -> torch.Tensor:
    """Smallest singular value of 2x2 matrices, closed form: (..., 2, 2) -> (...)."""
    a, b = matrix[..., 0, 0], matrix[..., 0, 1]
    c, d = matrix[..., 1, 0], matrix[..., 1, 1]
    s1 = a ** 2 + b ** 2 + c ** 2 + d ** 2
    s2 = torch.sqrt((a ** 2 + b ** 2 - c ** 2 - d ** 2) ** 2 + 4 * (a * c + b * d) ** 2)
    return torch.sqrt((s1 - s2) / 2)


def heatmap_to_keypoints(heatmap: torch.Tensor, kp_variance: KpVariance = "matrix",
                         clip_variance: float | None = None) -> Keypoints:
    """Mean and covariance of softmax heatmaps (B, K, H, W), each summing to 1."""
    height, width = heatmap.shape[-2:]
    heatmap = heatmap.unsqueeze(-1) + HEATMAP_EPS  # (B, K, H, W, 1)
    grid = make_coordinate_grid(height, width, heatmap)  # (H, W, 2)
    mean = (heatmap * grid).sum(dim=(2, 3))  # (B, K, 2)
    if kp_variance not in ("matrix", "single"):
        return Keypoints(mean)
    centred = grid - mean[:, :, None, None, :]  # (B, K, H, W, 2)
    if kp_variance == "single":
        var = (centred ** 2 * heatmap).sum(dim=(2, 3)).mean(dim=-1)  # (B, K)
        return Keypoints(mean, var[..., None, None])  # (B, K, 1, 1)
    outer = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # (B, K, H, W, 2, 2)
    covar = (outer * heatmap.unsqueeze(-1)).sum(dim=(2, 3))  # (B, K, 2, 2)
    if clip_variance:
        # Rescale so that the smallest singular value is at least clip_variance.
        sigma = smallest_singular(covar)[..., None, None]  # (B, K, 1, 1)
        covar = torch.clamp(sigma, min=clip_variance) * covar / sigma
    return Keypoints(mean, covar)


def keypoints_to_heatmap(kp: Keypoints, height: int, width: int,
                         kp_variance: KpVariance = "matrix") -> torch.Tensor:
    """Unnormalised Gaussian of each keypoint (paper Eq. 2): -> (B, K, H, W) in (0, 1]."""
    grid = make_coordinate_grid(height, width, kp.mean)  # (H, W, 2)
    centred = grid - kp.mean[:, :, None, None, :]  # (B, K, H, W, 2)
    dx, dy = centred[..., 0], centred[..., 1]
    if kp_variance == "matrix":
        a, b = kp.covar[..., 0, 0], kp.covar[..., 0, 1]  # (B, K)
        c, d = kp.covar[..., 1, 0], kp.covar[..., 1, 1]
        det = (a * d - b * c)[..., None, None]  # (B, K, 1, 1)
        # x^T inv(S) x with the closed-form 2x2 inverse [[d, -b], [-c, a]] / det
        quad = (dx * dx * d[..., None, None] - dx * dy * (b + c)[..., None, None]
                + dy * dy * a[..., None, None]) / det
    elif kp_variance == "single":
        quad = (dx * dx + dy * dy) / kp.covar[..., 0, 0][..., None, None]
    else:
        quad = (dx * dx + dy * dy) / float(kp_variance)
    return torch.exp(-0.5 * quad)


class KPDetector(nn.Module):
    """Hourglass -> K heatmaps -> spatial softmax at ``temperature`` -> Gaussian keypoints."""

    def __init__(self, config: KPDetectorConfig, num_kp: int, num_channels: int,
                 kp_variance: KpVariance):
        super().__init__()
        self.predictor = Hourglass(config.block_expansion, in_features=num_channels,
                                   out_features=num_kp, max_features=config.max_features,
                                   num_blocks=config.num_blocks)
        self.temperature = config.temperature
        self.scale_factor = config.scale_factor
        self.clip_variance = config.clip_variance
        self.kp_variance = kp_variance

    def forward(self, frames: torch.Tensor) -> Keypoints:
        """frames (B, C, H, W) in [0, 1] -> Keypoints with mean (B, K, 2)."""
        heatmap = self.predictor(downscale(frames, self.scale_factor))  # (B, K, h, w)
        batch, num_kp, height, width = heatmap.shape
        heatmap = heatmap.view(batch, num_kp, height * width)  # (B, K, h*w)
        heatmap = F.softmax(heatmap / self.temperature, dim=2)
        heatmap = heatmap.view(batch, num_kp, height, width)  # (B, K, h, w)
        return heatmap_to_keypoints(heatmap, self.kp_variance, self.clip_variance)
