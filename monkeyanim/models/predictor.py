"""Image-to-video: a GRU that predicts a keypoint sequence from the first frame's keypoints
(the paper's section 4.4, the authors' PredictionModule)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError, check_count
from .keypoints import Keypoints


@dataclass
class PredictorConfig:
    """Architecture of a KPPredictor, saved inside its file."""

    num_kp: int = 10
    kp_variance: str = "matrix"
    num_features: int = 1024  # GRU hidden units (paper: 1024)
    num_layers: int = 1
    predict_variance: bool = False  # else every frame keeps the first frame's covariance
    num_frames: int = 32  # sequence length it was trained on
    init_frames: int = 1  # frames given; the rest are predicted


def _shape_of(kp) -> str:
    """Keypoints' shapes for an error, or the type of what is not Keypoints."""
    if not isinstance(kp, Keypoints):
        return type(kp).__name__
    covar = "" if kp.covar is None else f", covar {tuple(kp.covar.shape)}"
    return f"mean {tuple(kp.mean.shape)}{covar}"


class KPPredictor(nn.Module):
    """GRU over keypoint sequences: each step sees the previous frame's mean (and covariance)
    flattened, and outputs the next frame's."""

    def __init__(self, config: PredictorConfig):
        super().__init__()
        self.config = config
        self.per_kp = 2 + 4 * (config.kp_variance == "matrix")
        size = config.num_kp * self.per_kp
        self.rnn = nn.GRU(input_size=size, hidden_size=config.num_features,
                          num_layers=config.num_layers, batch_first=True)
        self.linear = nn.Linear(config.num_features, size)

    def forward(self, kp: Keypoints) -> Keypoints:
        """kp: mean (B, T, K, 2) and covar (B, T, K, 2, 2), zero after the given frames ->
        the predicted sequence, same shapes (mean in [-1, 1])."""
        batch, frames, num_kp, _ = kp.mean.shape
        parts = [kp.mean.reshape(batch, frames, -1)]  # (B, T, K*2)
        if self.per_kp == 6:
            parts.append(kp.covar.reshape(batch, frames, -1))  # (B, T, K*4)
        output, _ = self.rnn(torch.cat(parts, dim=-1))  # (B, T, F)
        output = self.linear(output).view(batch, frames, num_kp, self.per_kp)  # (B, T, K, 6)
        mean = torch.tanh(output[..., :2])
        if self.per_kp == 2:
            return Keypoints(mean)
        root = output[..., 2:].reshape(batch, frames, num_kp, 2, 2)  # (B, T, K, 2, 2)
        return Keypoints(mean, root.transpose(-1, -2) @ root)  # symmetric, positive semi-definite

    @torch.inference_mode()
    def rollout(self, kp_first: Keypoints, frames: int) -> Keypoints:
        """From the first frame's keypoints (K, ...) or (1, K, ...) to a sequence
        (frames, K, ...), float32 (InputError for keypoints of another kind or count)."""
        kp_first = self._first_frame(kp_first, frames)
        mean = kp_first.mean.new_zeros(1, frames, *kp_first.mean.shape[-2:])
        mean[0, 0] = kp_first.mean.reshape(mean.shape[-2:])  # (K, 2) into (1, T, K, 2)
        covar = None
        if kp_first.covar is not None:
            covar = kp_first.covar.new_zeros(1, frames, *kp_first.covar.shape[-3:])
            covar[0, 0] = kp_first.covar.reshape(covar.shape[-3:])  # (K, 2, 2) into (1, T, K, 2, 2)
        predicted = self(Keypoints(mean, covar))[0]
        mean = torch.cat([mean[0, :1], predicted.mean[1:]])  # (T, K, 2): the first as given
        if covar is None:
            return Keypoints(mean)
        if not self.config.predict_variance:
            return Keypoints(mean, covar[0, :1].expand(frames, -1, -1, -1))  # (T, K, 2, 2)
        return Keypoints(mean, torch.cat([covar[0, :1], predicted.covar[1:]]))  # (T, K, 2, 2)

    def _first_frame(self, kp: Keypoints, frames: int) -> Keypoints:
        """rollout's inputs checked: one frame of this predictor's keypoints, as float32."""
        check_count(frames, "frames", 1)
        count, matrix = self.config.num_kp, self.per_kp == 6
        if not isinstance(kp, Keypoints) or tuple(kp.mean.shape[-2:]) != (count, 2) or (
                kp.mean.ndim not in (2, 3) or kp.mean.ndim == 3 and len(kp.mean) != 1):
            raise InputError(f"kp_first must be one frame's Keypoints, mean ({count}, 2) or "
                             f"(1, {count}, 2) (kp[0] of model.keypoints), got "
                             f"{_shape_of(kp)}")
        if matrix and (kp.covar is None or tuple(kp.covar.shape[-3:]) != (count, 2, 2)):
            raise InputError(f"kp_first needs its covariances, ({count}, 2, 2), for this "
                             f"predictor, got {None if kp.covar is None else _shape_of(kp)}")
        return kp.float()
