"""Where models come from: the registry of named checkpoints, local files, and loading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoint import convert_authors_checkpoint, load_checkpoint
from .config import ModelConfig, load_config_file
from .errors import CheckpointError, ConfigError
from .models import MonkeyNet
from .presets import AUTHOR_PRESETS, get_preset

AUTHOR_SUFFIXES = (".pth", ".tar", ".pt", ".ckpt")


@dataclass(frozen=True)
class RegistryEntry:
    """A named checkpoint: its file name, sha256 and a description."""

    file: str
    sha256: str
    description: str


# Bundled checkpoints are added here once trained (issue: bundled checkpoints).
_MODELS: dict[str, RegistryEntry] = {}


def available_models() -> list[str]:
    return sorted(_MODELS)


def resolve_config(config: str | Path | ModelConfig) -> ModelConfig:
    """A preset name (one of the authors' eight), a JSON file, or a ModelConfig."""
    if isinstance(config, ModelConfig):
        return config
    name = str(config)
    if name in AUTHOR_PRESETS:
        return get_preset(name)
    if name.endswith(".json") or Path(name).is_file():
        return load_config_file(name)
    return get_preset(name)  # raises, listing the valid names


def load_model(path_or_name: str | Path, config: str | Path | ModelConfig | None = None,
               device: str | None = None) -> MonkeyNet:
    """Load a model in eval mode from a project ``.safetensors`` file, an authors' checkpoint
    (``.pth.tar``, with ``config``: preset name or JSON file), or a registry name."""
    name = str(path_or_name)
    path = Path(name)
    if name.endswith(".safetensors"):
        model = load_checkpoint(path)
    elif name.endswith(AUTHOR_SUFFIXES):
        if config is None:
            raise ConfigError(f"{path.name} is an authors' checkpoint: give its config "
                              f"({', '.join(sorted(AUTHOR_PRESETS))}, or a .json file)")
        model = convert_authors_checkpoint(path, resolve_config(config))
    elif name in _MODELS:
        raise CheckpointError(f"checkpoint {name!r} is registered but not installed")
    else:
        valid = ", ".join(available_models()) or "none bundled yet"
        raise CheckpointError(f"unknown checkpoint {name!r}: not a .safetensors or .pth.tar "
                              f"file, nor a registered name ({valid})")
    return model.to(device) if device else model
