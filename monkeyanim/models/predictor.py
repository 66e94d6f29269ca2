"""Image-to-video: a GRU that predicts a keypoint sequence from the first frame's keypoints
(the paper's section 4.4, the authors' PredictionModule)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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
        """From the first frame's keypoints (K, ...) to a sequence (frames, K, ...)."""
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
