"""monkeyanim: animate a still image with the motion of a driving video (Monkey-Net)."""

from importlib import import_module

from .errors import (CheckpointError, ConfigError, InputError, MonkeyAnimError, NoFaceError,
                     OutputError, TrainingDiverged)

__version__ = "0.1.0"

# Imported on first use, so that `monkeyanim --help` and the CLI's input checks answer
# without the 2-3 s import of torch.
_LAZY = {"save_checkpoint": ".checkpoint", "available_models": ".hub", "load_model": ".hub",
         "ModelConfig": ".config", "Keypoints": ".models", "MonkeyNet": ".models",
         "build_model": ".models", "AnimateSettings": ".jobs", "animate_file": ".jobs",
         "reconstruct_file": ".jobs", "keypoints_file": ".overlay", "JobResult": ".jobs"}

__all__ = ["AnimateSettings", "CheckpointError", "ConfigError", "InputError", "Keypoints",
           "JobResult", "ModelConfig", "MonkeyAnimError", "MonkeyNet", "NoFaceError",
           "OutputError", "TrainingDiverged", "animate_file",
           "available_models", "build_model", "keypoints_file", "load_model", "reconstruct_file",
           "save_checkpoint"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'monkeyanim' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
