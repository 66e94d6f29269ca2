"""Building blocks shared by the networks: hourglass encoder/decoder and warping helpers.

The authors wrote these as Conv3d with kernel (1, 3, 3) over (B, C, T, H, W); every frame is
processed independently, so here frames are folded into the batch and everything is 2D.
Parameter names match the authors' so their state dicts load unchanged (minus the depth axis).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_coordinate_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel-centre coordinates in [-1, 1] (x first), on ``like``'s device and dtype: (H, W, 2)."""
    x = torch.arange(width, device=like.device, dtype=like.dtype)
    y = torch.arange(height, device=like.device, dtype=like.dtype)
    x = 2 * (x / (width - 1)) - 1
    y = 2 * (y / (height - 1)) - 1
    yy = y.view(-1, 1).expand(height, width)  # (H, W)
    xx = x.view(1, -1).expand(height, width)  # (H, W)
    return torch.stack([xx, yy], dim=-1)  # (H, W, 2)


def warp(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of (B, C, H, W) at grid (B, h, w, 2) in [-1, 1] -> (B, C, h, w).

    ``align_corners=True``: the semantics of PyTorch 0.4/1.0, which the authors trained with.
    ``image`` may have batch 1 and be broadcast over the grid's batch.
    """
    if image.shape[0] != grid.shape[0]:
        image = image.expand(grid.shape[0], *image.shape[1:])  # (B, C, H, W)
    # (B, C, h, w)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def layout_for(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``x`` in channels_last when the 3x3 ``conv``'s weights are (after load_model, in training).

    torch.cat and the embeddings build NCHW tensors; a conv with channels_last weights would
    convert each one anyway, and everything after a cat with a mixed layout falls back to
    NCHW, each conv converting again: together about 15% of inference time on a CPU. (A 1x1
    kernel's weights look contiguous in both layouts, hence a 3x3 one as the reference.)
    """
    weight = conv.weight
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def downscale(x: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """Nearest-neighbour resize by ``scale_factor`` with the authors' rounding (floor of size)."""
    if scale_factor == 1:
        return x
    height, width = x.shape[-2:]
    size = (int(height * scale_factor), int(width * scale_factor))
    return F.interpolate(x, size=size, mode="nearest")


class DownBlock2d(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> 2x2 average pool (encoder)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock2d(nn.Module):
    """2x nearest upsample -> conv 3x3 -> BatchNorm -> ReLU (decoder)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.relu(self.norm(self.conv(out)))


class SameBlock2d(nn.Module):
    """Grouped 1x1 conv -> BatchNorm -> ReLU, resolution preserved."""

    def __init__(self, in_features: int, out_features: int, groups: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=1, groups=groups)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: (BN -> ReLU -> conv 3x3) twice, plus the input."""

    def __init__(self, in_features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm2d(in_features, affine=True)
        self.norm2 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def _width(block_expansion: int, max_features: int, level: int) -> int:
    return min(max_features, block_expansion * (2 ** level))


class Encoder(nn.Module):
    """Hourglass encoder; returns the input and every block's output (the skips)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3,
                 max_features: int = 256):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(in_features if i == 0 else _width(block_expansion, max_features, i),
                        _width(block_expansion, max_features, i + 1))
            for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs  # resolutions H, H/2, ..., H/2**num_blocks


class Decoder(nn.Module):
    """Hourglass decoder: upsample, concatenate the matching skip, repeat; optional last conv."""

    def __init__(self, block_expansion: int, in_features: int, out_features: int,
                 num_blocks: int = 3, max_features: int = 256,
                 additional_features_for_block: int = 0, use_last_conv: bool = True):
        super().__init__()
        extra = additional_features_for_block
        self.up_blocks = nn.ModuleList(
            UpBlock2d((1 if i == num_blocks - 1 else 2) * _width(block_expansion, max_features, i + 1)
                      + extra, _width(block_expansion, max_features, i))
            for i in reversed(range(num_blocks)))
        self.conv = (nn.Conv2d(block_expansion + in_features + extra, out_features,
                               kernel_size=3, padding=1) if use_last_conv else None)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        if self.up_blocks:
            skips = [layout_for(skip, self.up_blocks[0].conv) for skip in skips]
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)  # (B, C_up + C_skip, h, w)
        return out if self.conv is None else self.conv(out)


class Hourglass(nn.Module):
    """U-Net: (B, in_features, H, W) -> (B, out_features, H, W); H and W multiples of
    2**num_blocks. Its last skip is the input itself."""

    def __init__(self, block_expansion: int, in_features: int, out_features: int,
                 num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, out_features, num_blocks, max_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
