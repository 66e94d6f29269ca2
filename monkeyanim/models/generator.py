"""Generator: encode the source, warp its features with the dense flow, decode with keypoints."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GeneratorConfig, KpVariance
from .blocks import Decoder, Encoder, ResBlock2d, make_coordinate_grid, warp
from .keypoints import Keypoints
from .motion import DenseMotion, MovementEmbedding


@dataclass
class GeneratorOutput:
    """frames: (B, C, H, W) in [0, 1]; deformed: the source warped by the flow, (B, C, H, W);
    blend: the weight of ``deformed`` in ``frames``, (B, 1, H, W) in [0, 1], when the generator
    blends it in (``GeneratorConfig.blend_source``), else None."""

    frames: torch.Tensor
    deformed: torch.Tensor
    blend: torch.Tensor | None = None


class Generator(nn.Module):
    """Encodes the source (B, C, H, W) in [0, 1] into features at every scale, warps each by
    the dense flow from source to driving keypoints, and decodes them, concatenated with the
    keypoint heatmap differences, into the driving frame (paper section 3.3)."""

    def __init__(self, config: GeneratorConfig, num_kp: int, num_channels: int,
                 kp_variance: KpVariance):
        super().__init__()
        self.appearance_encoder = Encoder(config.block_expansion, in_features=num_channels,
                                          max_features=config.max_features,
                                          num_blocks=config.num_blocks)
        self.kp_embedding_module = None
        embedding_features = 0
        if config.kp_embedding is not None:
            self.kp_embedding_module = MovementEmbedding(config.kp_embedding, num_kp, num_channels,
                                                         kp_variance)
            embedding_features = self.kp_embedding_module.out_channels
        self.dense_motion_module = None
        if config.dense_motion is not None:
            self.dense_motion_module = DenseMotion(config.dense_motion, num_kp, num_channels,
                                                   kp_variance)
        self.video_decoder = Decoder(config.block_expansion, in_features=num_channels,
                                     out_features=num_channels, max_features=config.max_features,
                                     num_blocks=config.num_blocks,
                                     additional_features_for_block=embedding_features,
                                     use_last_conv=False)
        features = config.block_expansion + num_channels + embedding_features
        self.refinement_module = nn.Sequential()
        for i in range(config.num_refinement_blocks):
            self.refinement_module.add_module(f"r{i}", ResBlock2d(features))
        self.refinement_module.add_module("conv-last", nn.Conv2d(features, num_channels, 1))
        self.blend_mask = None
        if config.blend_source:
            self.blend_mask = nn.Conv2d(features, 1, kernel_size=3, padding=1)
            # starts at an even blend: what the decoder makes and the warped source are both
            # near the target, so a fresh head costs little on weights trained without it
            nn.init.zeros_(self.blend_mask.weight)
            nn.init.zeros_(self.blend_mask.bias)
        # The authors' 'trilinear' on a depth of 1 frame is bilinear (align_corners=False).
        self.resize_mode = "bilinear" if config.interpolation_mode == "trilinear" else "nearest"
        self.align_flow = config.align_flow

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        if self.resize_mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def encode(self, source: torch.Tensor) -> list[torch.Tensor]:
        """The source's encoder features (skips), reusable for every driving frame."""
        return self.appearance_encoder(source)

    def flow(self, source: torch.Tensor, kp_driving: Keypoints,
             kp_source: Keypoints) -> torch.Tensor:
        """Sampling grid (B, h, w, 2) in [-1, 1] that warps the source towards the driving pose."""
        if self.dense_motion_module is not None:
            return self.dense_motion_module(source, kp_driving, kp_source)
        height, width = source.shape[-2:]
        grid = make_coordinate_grid(height, width, source)  # (H, W, 2)
        return grid.expand(kp_driving.mean.shape[0], height, width, 2)  # (B, H, W, 2)

    def _warp_features(self, feature: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        flow = flow.permute(0, 3, 1, 2)  # (B, 2, h, w)
        size = feature.shape[-2:]
        if self.align_flow and tuple(flow.shape[-2:]) != tuple(size):
            # grid points sit at -1 and 1 exactly (align_corners=True), so resize them that way
            flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=True)
        else:
            flow = self._resize(flow, size)
        return warp(feature, flow.permute(0, 2, 3, 1))  # flow (B, h', w', 2)

    def forward(self, source: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints,
                skips: list[torch.Tensor] | None = None) -> GeneratorOutput:
        """source (B or 1, C, H, W) in [0, 1]; kp_source (B or 1, K, ...); kp_driving (B, K, ...).

        ``skips`` are the source's encoder features when already computed (see ``encode``).
        """
        if skips is None:
            skips = self.encode(source)
        flow = self.flow(source, kp_driving, kp_source)
        skips = [self._warp_features(skip, flow) for skip in skips]
        deformed = skips[0]  # the first skip is the source itself
        if self.kp_embedding_module is not None:
            embedding = self.kp_embedding_module(source, kp_driving, kp_source)  # (B, E, h, w)
            skips = [torch.cat([skip, self._resize(embedding, skip.shape[-2:])], dim=1)
                     for skip in skips]  # (B, C_i + E, h_i, w_i)
        features = self.refinement_module[:-1](self.video_decoder(skips))  # (B, F, H, W)
        frames = torch.sigmoid(self.refinement_module[-1](features))  # (B, C, H, W)
        if self.blend_mask is None:
            return GeneratorOutput(frames=frames, deformed=deformed)
        blend = torch.sigmoid(self.blend_mask(features))  # (B, 1, H, W)
        frames = blend * deformed + (1 - blend) * frames  # (B, C, H, W)
        return GeneratorOutput(frames=frames, deformed=deformed, blend=blend)
