"""Keypoint embeddings and the dense-motion network (sparse keypoints -> dense optical flow)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DenseMotionConfig, EmbeddingConfig, KpVariance, check_embedding
from .blocks import (Hourglass, SameBlock2d, downscale, layout_for, make_coordinate_grid,
                     warp)
from .keypoints import Keypoints, keypoints_to_heatmap


class MovementEmbedding(nn.Module):
    """Per-keypoint input channels: heatmap, coordinate difference, source warped by its motion.

    The output groups channels keypoint by keypoint (a zero "background" keypoint first when
    ``add_background``), each group holding [heatmap (1), difference (2), warped source (C)]
    for the enabled parts, the authors' order. Has no parameters.
    """

    def __init__(self, config: EmbeddingConfig, num_kp: int, num_channels: int,
                 kp_variance: KpVariance, add_background: bool = False):
        super().__init__()
        check_embedding(config, "the embedding")  # (ModelConfig checks its own when made)
        self.config = config
        self.kp_variance = kp_variance
        self.add_background = add_background
        per_kp = (config.use_heatmap + 2 * config.use_difference
                  + num_channels * config.use_deformed_source_image)
        self.out_channels = per_kp * (num_kp + add_background)

    def _normalize(self, heatmap: torch.Tensor) -> torch.Tensor:
        if self.config.norm_const == "sum":
            return heatmap / heatmap.sum(dim=(2, 3), keepdim=True)
        return heatmap / float(self.config.norm_const)

    def _heatmap(self, kp_driving: Keypoints, kp_source: Keypoints, h: int, w: int) -> torch.Tensor:
        heatmap = self._normalize(keypoints_to_heatmap(kp_driving, h, w, self.kp_variance))
        if self.config.heatmap_type == "difference":
            source = self._normalize(keypoints_to_heatmap(kp_source, h, w, self.kp_variance))
            heatmap = heatmap - source  # (B, K, h, w), source broadcast over B
        return heatmap

    def forward(self, source: torch.Tensor, kp_driving: Keypoints,
                kp_source: Keypoints) -> torch.Tensor:
        """source (B or 1, C, H, W); keypoints (B or 1, K, ...) -> (B, out_channels, h, w)."""
        source = downscale(source, self.config.scale_factor)
        _, channels, h, w = source.shape
        batch = max(kp_driving.mean.shape[0], kp_source.mean.shape[0], source.shape[0])
        parts = []
        if self.config.use_heatmap:
            heatmap = self._heatmap(kp_driving, kp_source, h, w)
            heatmap = heatmap.expand(batch, *heatmap.shape[1:])  # (B, K, h, w)
            if self.add_background:
                heatmap = F.pad(heatmap, (0, 0, 0, 0, 1, 0))  # zero map first: (B, K+1, h, w)
            parts.append(heatmap.unsqueeze(2))  # (B, K', 1, h, w)
        if self.config.use_difference or self.config.use_deformed_source_image:
            diff = (kp_source.mean - kp_driving.mean).expand(batch, -1, -1)  # (B, K, 2)
            if self.add_background:
                diff = F.pad(diff, (0, 0, 1, 0))  # (B, K+1, 2)
            num = diff.shape[1]
        if self.config.use_difference:
            parts.append(diff[..., None, None].expand(batch, num, 2, h, w))  # (B, K', 2, h, w)
        if self.config.use_deformed_source_image:
            grid = make_coordinate_grid(h, w, diff) + diff[:, :, None, None, :]  # (B, K', h, w, 2)
            grid = grid.reshape(batch * num, h, w, 2)  # (B*K', h, w, 2)
            images = source.unsqueeze(1).expand(batch, num, channels, h, w)  # (B, K', C, h, w)
            images = images.reshape(batch * num, channels, h, w)  # (B*K', C, h, w)
            parts.append(warp(images, grid).view(batch, num, channels, h, w))  # (B, K', C, h, w)
        embedding = torch.cat(parts, dim=2)  # (B, K', per_kp, h, w)
        return embedding.reshape(batch, -1, h, w)  # (B, K' * per_kp, h, w)


class DenseMotion(nn.Module):
    """K+1 soft masks (background first) blend per-keypoint motions (Eq. 4), plus a correction.

    Returns the sampling grid: for each output pixel, where to read the source, in [-1, 1].
    """

    def __init__(self, config: DenseMotionConfig, num_kp: int, num_channels: int,
                 kp_variance: KpVariance):
        super().__init__()
        self.mask_embedding = MovementEmbedding(config.mask_embedding, num_kp, num_channels,
                                                kp_variance, add_background=True)
        self.difference_embedding = MovementEmbedding(
            EmbeddingConfig(use_heatmap=False, use_difference=True), num_kp, num_channels,
            kp_variance, add_background=True)
        channels = self.mask_embedding.out_channels
        self.group_blocks = nn.ModuleList(
            SameBlock2d(channels, channels, groups=num_kp + 1)
            for _ in range(config.num_group_blocks))
        out_features = (num_kp + 1) * config.use_mask + 2 * config.use_correction
        self.hourglass = Hourglass(config.block_expansion, in_features=channels,
                                   out_features=out_features, max_features=config.max_features,
                                   num_blocks=config.num_blocks)
        # Start from "everything is background, no correction": the identity flow.
        self.hourglass.decoder.conv.weight.data.zero_()
        bias = [config.bg_init] + [0.0] * num_kp if config.use_mask else []
        bias += [0.0, 0.0] if config.use_correction else []
        self.hourglass.decoder.conv.bias.data.copy_(torch.tensor(bias))
        self.num_kp = num_kp
        self.use_mask = config.use_mask
        self.use_correction = config.use_correction
        self.scale_factor = config.scale_factor

    def forward(self, source: torch.Tensor, kp_driving: Keypoints,
                kp_source: Keypoints) -> torch.Tensor:
        """source (B or 1, C, H, W) -> sampling grid (B, h, w, 2), h = H * scale_factor."""
        source = downscale(source, self.scale_factor)
        prediction = self.mask_embedding(source, kp_driving, kp_source)  # (B, C', h, w)
        prediction = layout_for(prediction, self.hourglass.encoder.down_blocks[0].conv)
        for block in self.group_blocks:
            # The authors apply leaky_relu(0.2) here; after the block's ReLU it is the identity.
            prediction = block(prediction)
        prediction = self.hourglass(prediction)  # (B, K+1 + 2, h, w)
        batch, _, h, w = prediction.shape
        motion = prediction.new_zeros(batch, 2, h, w)
        if self.use_mask:
            mask = F.softmax(prediction[:, :self.num_kp + 1], dim=1).unsqueeze(2)  # (B, K+1, 1, h, w)
            diff = self.difference_embedding(source, kp_driving, kp_source)  # (B, (K+1)*2, h, w)
            diff = diff.view(batch, self.num_kp + 1, 2, h, w)  # (B, K+1, 2, h, w)
            motion = motion + (diff * mask).sum(dim=1)  # (B, 2, h, w)
        if self.use_correction:
            motion = motion + prediction[:, -2:]
        grid = make_coordinate_grid(h, w, motion)  # (h, w, 2)
        return motion.permute(0, 2, 3, 1) + grid  # (B, h, w, 2)
