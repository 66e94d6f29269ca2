"""The whole model: keypoint detector + generator (+ discriminator for training), built elsewhere."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig, frame_size_problem
from ..errors import InputError
from .discriminator import Discriminator
from .generator import Generator, GeneratorOutput
from .keypoints import KPDetector, Keypoints

# how far frames may stray outside [0, 1] (a bicubic resize overshoots a little); frames in
# 0..255 or [-1, 1] are a mistake that would give garbage
PIXEL_SLACK = 0.1
# how far keypoint means may lie outside the frame's [-1, 1]: relative motion (scaled by
# the authors' movement multiplier) can carry a keypoint well out of the frame, but a mean
# of 32 is a pixel coordinate given by mistake
MAX_KP_COORD = 10.0
# how far a covariance's two off-diagonal entries may differ, as a share of its largest
# entry: rounding (bf16 keeps 3 digits) stays far below; a matrix made by hand may not
COVAR_SYMMETRY = 1e-2
# the packages whose frames _caller_level skips (with a separator: not torchvision's)
_LIBRARY_FOLDERS = tuple(str(Path(module.__file__).resolve().parents[depth]) + os.sep
                         for module, depth in ((torch, 0), (sys.modules[__name__], 1)))


class MonkeyNet(nn.Module):
    """Monkey-Net handed its networks already built (see :func:`build_model`).

    ``provenance`` describes where the weights come from (name, data, iterations, metrics).
    """

    def __init__(self, config: ModelConfig, kp_detector: KPDetector, generator: Generator,
                 discriminator: Discriminator | None = None, provenance: dict | None = None):
        super().__init__()
        self.config = config
        self.kp_detector = kp_detector
        self.generator = generator
        self.discriminator = discriminator
        self.provenance = dict(provenance or {})

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.parameters()).device

    def check_frames(self, frames: torch.Tensor, what: str) -> torch.Tensor:
        """frames (T, C, H, W) on this model's device as float32, or InputError naming
        ``what`` when they are not floats or their channels or size cannot go through the
        networks, or when the model is in training mode (``model.eval()`` first)."""
        if self.training:  # BatchNorm would normalise by this batch and learn from it
            raise InputError("the model is in training mode: its BatchNorm layers would take "
                             "these frames' statistics and change its weights; call "
                             "model.eval() first (load_model gives it in eval mode)")
        if not isinstance(frames, torch.Tensor) or not frames.is_floating_point():
            got = frames.dtype if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise InputError(f"{what} must be a float tensor in [0, 1], got {got} (frames "
                             f"read as uint8 go in as frames.float() / 255)")
        if frames.ndim != 4 or frames.shape[1] != self.config.num_channels:
            raise InputError(f"{what} must be (T, {self.config.num_channels}, H, W), "
                             f"got {tuple(frames.shape)}")
        if not len(frames):
            raise InputError(f"{what} holds no frames: (0, C, H, W)")
        if not frames.numel():
            raise InputError(f"{what} are frames of no pixels: {tuple(frames.shape)}")
        weights = next(self.parameters()).dtype
        if weights != torch.float32:  # inputs are float32: the two would not mix
            raise InputError(f"the model's weights are {weights}: keep them float32 "
                             "(model.float()) and ask for precision 'bf16' or 'fp16', which "
                             "runs them under autocast")
        low, high = (float(v) for v in torch.aminmax(frames.detach()))
        if not (-PIXEL_SLACK <= low and high <= 1 + PIXEL_SLACK):  # NaN fails both
            raise InputError(f"{what} must be in [0, 1], got values from {low:g} to {high:g}"
                             + (" (divide 0..255 pixels by 255)" if 2 < high <= 255 else ""))
        height, width = frames.shape[-2:]
        problem = frame_size_problem(self.config, height, width)
        if problem:
            raise InputError(f"{what} of {height}x{width} cannot go through this model "
                             f"({problem}); it was trained at {self.config.frame_size[0]}x"
                             f"{self.config.frame_size[1]}")
        if (height, width) != tuple(self.config.frame_size):
            warnings.warn(f"{what}: {height}x{width}, but this model was trained at "
                          f"{self.config.frame_size[0]}x{self.config.frame_size[1]}: they run, "
                          "less well; resize them with monkeyanim.video.fit_frame",
                          stacklevel=_caller_level())
        return frames.to(self.device, torch.float32)

    @torch.inference_mode()
    def keypoints(self, frames: torch.Tensor) -> Keypoints:
        """frames (T, C, H, W) float in [0, 1] -> Keypoints, mean (T, K, 2) in [-1, 1] x first,
        covar (T, K, 2, 2)."""
        return self.kp_detector(self.check_frames(frames, "frames"))

    @torch.inference_mode()
    def generate(self, source: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints,
                 skips: list[torch.Tensor] | None = None) -> GeneratorOutput:
        """Animate ``source`` (C, H, W) in [0, 1] from its keypoints (K, ...) or (1, K, ...) to
        each driving pose (T, K, ...): frames (T, C, H, W) in [0, 1] and deformed (T, C, H, W).
        ``skips``: the source's encoder features, ``self.generator.encode(source[None])``,
        computed once for many calls with the same source (else computed here)."""
        source = self.check_image(source, "source")
        kp_source = self.one_frame_keypoints(kp_source, "kp_source")
        self.check_keypoints(kp_driving, "kp_driving")
        return self.generator(source, kp_source, kp_driving.to(self.device, torch.float32),
                              skips=skips)

    def one_frame_keypoints(self, kp: Keypoints, what: str) -> Keypoints:
        """One frame's keypoints, (K, ...) or (1, K, ...), checked (InputError naming
        ``what``), as (1, K, ...) float32 on this model's device."""
        self.check_keypoints(kp, what, one=True)
        kp = kp if kp.mean.ndim == 3 else kp[None]  # (1, K, 2)
        return kp.to(self.device, torch.float32)

    def check_image(self, image: torch.Tensor, what: str) -> torch.Tensor:
        """One image (C, H, W) or (1, C, H, W) -> (1, C, H, W) as check_frames gives it."""
        channels = self.config.num_channels
        if isinstance(image, torch.Tensor) and image.ndim == 4 and len(image) == 1:
            image = image[0]  # (C, H, W)
        if isinstance(image, torch.Tensor) and (image.ndim != 3 or len(image) != channels):
            raise InputError(f"{what} must be one image, ({channels}, H, W), got "
                             f"{tuple(image.shape)}")
        return self.check_frames(image[None] if isinstance(image, torch.Tensor) else image,
                                 what)  # (1, C, H, W)

    def check_keypoints(self, kp: Keypoints, what: str, one: bool = False) -> None:
        """InputError unless ``kp`` is Keypoints of this model's kind: (T, K, 2) means, or
        with ``one`` (K, 2) or (1, K, 2); covariances (..., K, 2, 2) for 'matrix' variance,
        (..., K, 1, 1) for 'single' (a fixed variance ignores them); finite means within
        MAX_KP_COORD of the frame and positive-definite covariances (others turn the
        heatmaps into NaN or nothing)."""
        if not isinstance(kp, Keypoints) or not all(
                isinstance(t, torch.Tensor) for t in (kp.mean, kp.covar) if t is not None):
            got = type(kp).__name__ if not isinstance(kp, Keypoints) else "other than tensors"
            raise InputError(f"{what} must be Keypoints of tensors (from model.keypoints), got "
                             f"{got}")
        count, shape = self.config.num_kp, tuple(kp.mean.shape)
        wanted = "(K, 2) or (1, K, 2)" if one else "(T, K, 2) with T >= 1"
        if shape[-2:] != (count, 2) or not (len(shape) == 3 or one and len(shape) == 2) \
                or one and len(shape) == 3 and shape[0] != 1 or 0 in shape:
            raise InputError(f"{what} means must be {wanted} with K = {count}, got {shape}")
        side = {"matrix": 2, "single": 1}.get(str(self.config.kp_variance))
        covar_shape = None if side is None else shape[:-1] + (side, side)
        if covar_shape is not None and (kp.covar is None
                                        or tuple(kp.covar.shape) != covar_shape):
            got = None if kp.covar is None else tuple(kp.covar.shape)
            raise InputError(f"{what} needs covariances {covar_shape}, got {got}")
        _check_keypoint_values(kp.mean, kp.covar if covar_shape else None, what)


def _caller_level() -> int:
    """warnings' stacklevel of the first caller outside monkeyanim and torch (whose
    inference_mode wraps the public methods), from the function that calls this one."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.realpath(frame.f_code.co_filename).startswith(
            _LIBRARY_FOLDERS):
        frame, level = frame.f_back, level + 1
    return level


def _check_keypoint_values(mean: torch.Tensor, covar: torch.Tensor | None, what: str) -> None:
    """InputError for means that are not finite or far outside the frame, and covariances
    that are not finite or not positive definite."""
    mean = mean.detach().float()
    if not bool(torch.isfinite(mean).all()) or float(mean.abs().max()) > MAX_KP_COORD:
        raise InputError(f"{what} means must be finite and in [-1, 1] (the frame, x first; "
                         f"within {MAX_KP_COORD:g}), got values from {float(mean.min()):g} to "
                         f"{float(mean.max()):g}")
    if covar is None:
        return
    covar = covar.detach().float()
    # a symmetric 2x2 matrix is positive definite when its first entry and its determinant
    # are > 0 (a covariance is symmetric; up to rounding, in those the detector gives)
    definite = covar[..., 0, 0] > 0  # (..., K)
    if covar.shape[-1] == 2:
        asymmetry = (covar[..., 0, 1] - covar[..., 1, 0]).abs()  # (..., K)
        scale = covar.abs().amax(dim=(-2, -1))  # (..., K)
        definite &= (torch.linalg.det(covar) > 0) & (asymmetry <= COVAR_SYMMETRY * scale)
    if not bool(torch.isfinite(covar).all()) or not bool(definite.all()):
        raise InputError(f"{what} covariances must be finite and positive definite")


def build_model(config: ModelConfig, with_discriminator: bool = True,
                provenance: dict | None = None) -> MonkeyNet:
    """Build every network of ``config`` with fresh weights, in training mode (as any fresh
    nn.Module): ``.eval()`` before inference."""
    common = dict(num_kp=config.num_kp, num_channels=config.num_channels,
                  kp_variance=config.kp_variance)
    discriminator = Discriminator(config.discriminator, **common) if with_discriminator else None
    return MonkeyNet(config, KPDetector(config.kp_detector, **common),
                     Generator(config.generator, **common), discriminator, provenance)
