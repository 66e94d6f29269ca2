"""Training losses as small callables (the paper's least-squares GAN + feature matching)."""

from __future__ import annotations

import torch


class FeatureMatching:
    """Weighted L1 between the discriminator's feature maps of real and generated frames, one
    weight per map except the final scores (the authors' [10, 10, 10, 10, 1]: the paper's
    lambda = 10). Real maps keep their gradient, as in the authors' code: they depend on the
    keypoint heatmaps fed to the discriminator."""

    def __init__(self, weights: list[float]):
        self.weights = weights

    def __call__(self, real_maps: list[torch.Tensor],
                 fake_maps: list[torch.Tensor]) -> torch.Tensor:
        """The discriminator's maps for real and generated frames, each list (B, C_i, H_i,
        W_i) float, its last the scores (left out) -> a scalar."""
        total = fake_maps[0].new_zeros(())
        for weight, real, fake in zip(self.weights, real_maps[:-1], fake_maps[:-1]):
            if weight:
                total = total + weight * (fake - real).abs().mean()
        return total


class GeneratorGAN:
    """LSGAN generator loss: (1 - D(fake))^2."""

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def __call__(self, fake_scores: torch.Tensor) -> torch.Tensor:
        """Scores of generated frames (B, 1, h, w) float, 1 meaning real -> a scalar."""
        return self.weight * (1 - fake_scores).square().mean()


class DiscriminatorGAN:
    """LSGAN discriminator loss: (1 - D(real))^2 + D(fake)^2."""

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def __call__(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        """Scores of real and generated frames, each (B, 1, h, w) float -> a scalar."""
        return self.weight * ((1 - real_scores).square().mean() + fake_scores.square().mean())


class DeformedReconstruction:
    """L1 between the target and the source warped by the flow (the authors' rec_def)."""

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self, target: torch.Tensor, deformed: torch.Tensor) -> torch.Tensor:
        """Target frames and the warped sources, each (B, 3, H, W) float in [0, 1] -> a
        scalar."""
        return self.weight * (target - deformed).abs().mean()
