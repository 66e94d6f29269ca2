"""The Monkey-Net networks, written as 2D PyTorch over batches of frames (B = frames)."""

from .discriminator import Discriminator
from .generator import Generator, GeneratorOutput
from .keypoints import KPDetector, Keypoints
from .monkeynet import MonkeyNet, build_model

__all__ = ["Discriminator", "Generator", "GeneratorOutput", "KPDetector", "Keypoints", "MonkeyNet", "build_model"]
