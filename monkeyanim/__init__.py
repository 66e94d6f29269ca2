"""monkeyanim: animate a still image with the motion of a driving video (Monkey-Net)."""

from .checkpoint import save_checkpoint
from .hub import available_models, load_model
from .config import ModelConfig
from .errors import CheckpointError, ConfigError, InputError, MonkeyAnimError
from .models import Keypoints, MonkeyNet, build_model

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "InputError", "Keypoints", "ModelConfig",
           "MonkeyAnimError", "MonkeyNet", "available_models", "build_model", "load_model",
           "save_checkpoint"]
