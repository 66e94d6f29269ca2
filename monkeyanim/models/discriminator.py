"""Pix2pix-like discriminator on a frame concatenated with its keypoint heatmaps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DiscriminatorConfig, KpVariance
from .blocks import downscale
from .keypoints import Keypoints
from .motion import MovementEmbedding

LEAKY_SLOPE = 0.2


class DownBlock2d(nn.Module):
    """conv 4x4 (no padding) -> optional InstanceNorm -> LeakyReLU -> 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int, norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=4)
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        return F.avg_pool2d(F.leaky_relu(out, LEAKY_SLOPE), 2)


class Discriminator(nn.Module):
    """Patch discriminator on frames (B, C, H, W) in [0, 1] with the keypoints' embedding
    (heatmaps) stacked on; its feature maps serve feature matching, its last map the LSGAN."""

    def __init__(self, config: DiscriminatorConfig, num_kp: int, num_channels: int,
                 kp_variance: KpVariance):
        super().__init__()
        self.kp_embedding = None
        embedding_channels = 0
        if config.kp_embedding is not None:
            self.kp_embedding = MovementEmbedding(config.kp_embedding, num_kp, num_channels,
                                                  kp_variance)
            embedding_channels = self.kp_embedding.out_channels
        width = [min(config.max_features, config.block_expansion * 2 ** (i + 1))
                 for i in range(config.num_blocks)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(num_channels + embedding_channels if i == 0 else width[i - 1], width[i],
                        norm=i != 0)
            for i in range(config.num_blocks))
        self.conv = nn.Conv2d(width[-1], 1, kernel_size=1)
        self.scale_factor = config.scale_factor

    def forward(self, frames: torch.Tensor, kp_driving: Keypoints,
                kp_source: Keypoints) -> list[torch.Tensor]:
        """frames (B, C, H, W) -> feature maps [input, block_1, ..., block_n, scores (B, 1, h, w)].

        Instance norm here is per frame; the authors' 3D version normalised over the frames of
        a clip jointly, which is the same for their training (one frame per sample).
        """
        maps = [frames]
        out = downscale(frames, self.scale_factor)
        if self.kp_embedding is not None:
            heatmap = self.kp_embedding(out, kp_driving, kp_source)  # (B, K, H, W)
            out = torch.cat([out, heatmap], dim=1)  # (B, C + K, H, W)
        for block in self.down_blocks:
            out = block(out)
            maps.append(out)
        maps.append(self.conv(out))
        return maps
