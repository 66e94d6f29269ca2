"""Training hyper-parameters: the authors' presets, overridable from YAML or the command line."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelConfig, check_whole, is_positive_number
from .data import Augmentation
from .errors import ConfigError, first_line
from .presets import AUTHOR_PRESETS, get_preset

# the largest seed: 32 bits, as numpy's; torch's 64 must also hold seed + iterations
MAX_SEED = 2 ** 32 - 1
MAX_WORKERS = 32  # data loader processes, each a copy of the dataset's process
MAX_BATCH_PAIRS = 1024  # pairs of frames per iteration and process (the authors': 20 to 40)
MAX_LR = 1e9  # far past any that trains (the presets': 2e-4); past float32's 3.4e38, Adam fails


@dataclass
class TrainConfig:
    """The authors' train_params, with epochs turned into iterations at run time."""

    num_epochs: int = 100
    epoch_milestones: list[int] = field(default_factory=list)  # lr / 10 at each
    iterations: int | None = None  # overrides num_epochs (milestones scale with it)
    batch_size: int = 16
    lr: float = 2e-4
    adam_betas: tuple[float, float] = (0.5, 0.999)
    feature_matching: list[float] = field(default_factory=lambda: [10, 10, 10, 10, 1])
    reconstruction_deformed: float = 0.0
    generator_gan: float = 1.0
    discriminator_gan: float = 1.0
    detach_kp_generator: bool = False
    detach_kp_discriminator: bool = True
    num_repeats: int = 1
    augmentation: Augmentation = field(default_factory=Augmentation)
    # names (or name prefixes) of the only parameters to train, e.g. ["generator.blend_mask"];
    # the others stay fixed, their batch norms on their running statistics. None: train all.
    trainable: list[str] | None = None
    checkpoint_every: int = 500
    # every so many iterations, the reconstruction L1 on DATA/val/ (videos not trained on),
    # the best weights kept as best.safetensors; 0: no validation
    validate_every: int = 0
    sample_every: int = 500
    log_every: int = 10
    seed: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        at_least = {"num_epochs": 1, "batch_size": 1, "num_repeats": 1, "checkpoint_every": 1,
                    "sample_every": 1, "log_every": 1, "num_workers": 0, "validate_every": 0,
                    "seed": 0}
        for name, smallest in at_least.items():
            check_whole(getattr(self, name), name, smallest)
        for name, largest in (("seed", MAX_SEED), ("num_workers", MAX_WORKERS),
                              ("batch_size", MAX_BATCH_PAIRS)):
            if getattr(self, name) > largest:  # (more filled the memory, then hung)
                raise ConfigError(f"{name} must be at most {largest}, not "
                                  f"{getattr(self, name)}")
        if self.iterations is not None:
            check_whole(self.iterations, "iterations")
        if not is_positive_number(self.lr) or self.lr > MAX_LR:
            raise ConfigError(f"lr must be positive and at most {MAX_LR:g}, not {self.lr!r}")
        _check_values(self)

    def schedule(self, iterations_per_epoch: int) -> tuple[int, list[int]]:
        """Total iterations and the iterations at which the learning rate drops."""
        total = self.iterations or self.num_epochs * iterations_per_epoch
        milestones = [round(m / self.num_epochs * total) for m in self.epoch_milestones]
        return total, [m for m in milestones if 0 < m < total]


def _number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value))


def _numbers(value: Any, count: int | None = None) -> bool:
    """A list (or tuple) of numbers, of ``count`` of them when given."""
    return (isinstance(value, (list, tuple)) and all(map(_number, value))
            and (count is None or len(value) == count))


def _check_values(cfg: TrainConfig) -> None:
    """ConfigError for settings of the wrong kind or range, which would otherwise fail deep
    in training or be taken silently (a string as a bool, a negative loss weight)."""
    if not _numbers(cfg.epoch_milestones) or any(m < 0 for m in cfg.epoch_milestones):
        raise ConfigError(f"epoch_milestones must be a list of epochs, not "
                          f"{cfg.epoch_milestones!r}")
    if not _numbers(cfg.adam_betas, 2) or not all(0 <= b < 1 for b in cfg.adam_betas):
        raise ConfigError(f"adam_betas must be two numbers in [0, 1), not {cfg.adam_betas!r}")
    if not _numbers(cfg.feature_matching) or any(w < 0 for w in cfg.feature_matching):
        raise ConfigError(f"feature_matching must be a list of weights >= 0, not "
                          f"{cfg.feature_matching!r}")
    for name in ("reconstruction_deformed", "generator_gan", "discriminator_gan"):
        if not _number(getattr(cfg, name)) or getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be a weight >= 0, not {getattr(cfg, name)!r}")
    for name in ("detach_kp_generator", "detach_kp_discriminator"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(f"{name} must be true or false, not {getattr(cfg, name)!r}")
    if cfg.trainable is not None and not (isinstance(cfg.trainable, list) and all(
            isinstance(name, str) for name in cfg.trainable)):
        raise ConfigError(f"trainable must be a list of parameter names, e.g. "
                          f"[generator.blend_mask], not {cfg.trainable!r}")
    _check_augmentation(cfg.augmentation)


def _check_augmentation(aug: Any) -> None:
    if not isinstance(aug, Augmentation):
        raise ConfigError(f"augmentation must be a mapping of its settings "
                          f"({', '.join(f.name for f in dataclasses.fields(Augmentation))}), "
                          f"not {aug!r}")
    for name in ("horizontal_flip", "time_flip"):
        if not isinstance(getattr(aug, name), bool):
            raise ConfigError(f"augmentation.{name} must be true or false, not "
                              f"{getattr(aug, name)!r}")
    ratio = aug.resize_ratio
    if ratio is not None and not (_numbers(ratio, 2) and 0 < ratio[0] <= ratio[1]):
        raise ConfigError(f"augmentation.resize_ratio must be [low, high] with 0 < low <= high, "
                          f"not {ratio!r}")
    if not _number(aug.hue) or not 0 <= aug.hue <= 1:
        raise ConfigError(f"augmentation.hue must be in [0, 1] (a share of the colour wheel), "
                          f"not {aug.hue!r}")
    if not _number(aug.rotation_degrees) or not 0 <= aug.rotation_degrees <= 180:
        raise ConfigError(f"augmentation.rotation_degrees must be in [0, 180], not "
                          f"{aug.rotation_degrees!r}")


def check_feature_matching(cfg: TrainConfig, model: ModelConfig) -> None:
    """One weight per discriminator feature map but the scores: its input and each block."""
    maps = model.discriminator.num_blocks + 1
    if len(cfg.feature_matching) != maps:
        raise ConfigError(f"feature_matching has {len(cfg.feature_matching)} weights but the "
                          f"discriminator gives {maps} feature maps (its input and each of "
                          f"its {maps - 1} blocks): give {maps}")


_AUG = {
    "shapes": Augmentation(True, True),
    "actions": Augmentation(True, True, (0.9, 1.1), 0.5, 10),
    "moving-gif": Augmentation(True, True, (0.9, 1.1), 0.5),
}
_TRAIN = {  # name: (epochs, milestones, batch size, deformed-reconstruction weight)
    "shapes": (8, [4], 16, 0), "actions": (4500, [3000], 32, 0), "taichi": (750, [500], 32, 0),
    "nemo": (750, [500], 32, 0), "bair": (15, [10], 32, 10), "moving-gif": (750, [500], 64, 0),
    "vox": (20, [], 20, 0), "vox-full": (20, [], 20, 0),
}
TRAIN_PRESETS = [name for name in AUTHOR_PRESETS if name in _TRAIN]


def train_preset(name: str) -> tuple[ModelConfig, TrainConfig]:
    model = get_preset(name)
    epochs, milestones, batch, deformed = _TRAIN[name]
    train = TrainConfig(num_epochs=epochs, epoch_milestones=milestones, batch_size=batch,
                        reconstruction_deformed=deformed,
                        augmentation=_AUG.get(name, Augmentation(True, True)))
    return model, train


def _merge(obj: Any, overrides: dict[str, Any], where: str) -> Any:
    """A copy of dataclass ``obj`` with ``overrides`` applied recursively."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    kinds = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"unknown setting {where}{key}; known: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _merge(current, value, f"{where}{key}.")
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        changes[key] = _whole_numbers(value, kinds[key])
    return dataclasses.replace(obj, **changes)


def _whole_numbers(value: Any, kind: Any) -> Any:
    """``value`` with the whole floats where ``kind`` wants ints made ints: iterations: 1e5,
    frame_size: [6.4e1, 6.4e1] (YAML reads a number with an exponent as a float)."""
    def whole(number: Any) -> Any:
        return int(number) if isinstance(number, float) and number.is_integer() else number

    if kind in (int, int | None):
        return whole(value)
    if (typing.get_origin(kind) in (list, tuple) and isinstance(value, (list, tuple))
            and set(typing.get_args(kind)) - {Ellipsis} == {int}):
        return type(value)(map(whole, value))
    return value


def saved_run_config(path: Path) -> tuple[ModelConfig, TrainConfig]:
    """The configs that a run folder's config.json recorded (written by the Trainer)."""
    try:
        saved = json.loads(Path(path).read_text())
        return (ModelConfig.from_dict(saved["model"]),
                _merge(TrainConfig(), saved["train"], "train."))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        from .runstate import fresh_start  # (torch: only when it is needed)

        raise ConfigError(f"{path} is damaged ({type(exc).__name__}: {exc}): the run's "
                          f"settings are lost; {fresh_start(Path(path).parent, settings=False)}"
                          ) from None


def _loader():
    """yaml's safe loader, also reading 2e-4 as a number: YAML 1.1, which PyYAML follows,
    wants a dot in it (2.0e-4) and reads 2e-4 as a string."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    number = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", number, list("-+0123456789"))
    return Loader


def load_train_config(spec: str | None) -> tuple[ModelConfig, TrainConfig]:
    """A preset name, or a YAML file with ``preset``, ``model`` and ``train`` sections."""
    if spec is None:
        spec = "shapes"
    if spec in _TRAIN:
        return train_preset(spec)
    path = Path(spec)
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"unknown config {spec!r}; choose a preset "
                          f"({', '.join(TRAIN_PRESETS)}) or a .yaml file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    import yaml

    try:
        data = yaml.load(path.read_text(), Loader=_loader()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {first_line(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: it is not text (UTF-8 YAML or JSON)") from None
    if isinstance(data, dict) and "model_params" in data:
        raise ConfigError(f"{path} is an authors' config: train takes a preset "
                          f"({', '.join(TRAIN_PRESETS)}) or a file with keys preset, model, "
                          "train (see the README); their checkpoints convert with "
                          f"`monkeyanim convert CHECKPOINT --config {path}`")
    if not isinstance(data, dict) or set(data) - {"preset", "model", "train"}:
        raise ConfigError(f"{path} must be a mapping with keys preset, model, train")
    base = data.get("preset", "shapes")
    for key in ("model", "train"):
        if not isinstance(data.get(key) or {}, dict):
            raise ConfigError(f"{path}: {key} must be a mapping of settings, not "
                              f"{type(data[key]).__name__} {data[key]!r}")
    if not isinstance(base, str) or base not in _TRAIN:
        raise ConfigError(f"{path}: unknown preset {base!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    model, train = train_preset(base)
    try:
        model = _merge(model, data.get("model") or {}, "model.")
        train = _merge(train, data.get("train") or {}, "train.")
        model = ModelConfig.from_dict(model.to_dict())  # validates nested types
    except (TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return model, train
