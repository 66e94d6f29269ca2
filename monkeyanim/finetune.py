"""Starting a training run from another checkpoint's weights, and training only some of them
(train.init and train.trainable)."""

from __future__ import annotations

import torch

from .config import ModelConfig
from .errors import CheckpointError, ConfigError
from .models import MonkeyNet, build_model

# the blend head's weights: a run may start with or without them whatever its config says
BLEND_HEAD = "generator.blend_mask."
WHOSE = ("the checkpoint", "the run")  # whose settings an --init error compares


def freeze_all_but(model: MonkeyNet, trainable: list[str]) -> None:
    """Fix every parameter whose name does not start with one of ``trainable``."""
    names = [name for name, _ in model.named_parameters()]
    unmatched = [p for p in trainable if not any(n.startswith(p) for n in names)]
    if unmatched or not trainable:
        raise ConfigError(f"train.trainable: no parameter is named {unmatched or trainable}")
    for name, param in model.named_parameters():
        param.requires_grad_(any(name.startswith(prefix) for prefix in trainable))


# what a checkpoint's metadata says of the weights themselves, kept by a run started from
# them: how to move its keypoints, and which kind of subject (its crops and metrics)
INHERITED = ("default_mode", "face_model", "body_model")


def load_initial_weights(model: MonkeyNet, start: MonkeyNet) -> None:
    """Fine-tune from ``start`` (weights of the same shapes: settings that hold no weights,
    such as the frame size or the keypoints' temperature, may differ): every weight it has
    is copied; a checkpoint shipped without its discriminator, or trained without the blend
    head, leaves those freshly initialised. A start with the head, for a run without it,
    leaves its head out (taichi64 trains without it and gets it back, untrained, when
    exported)."""
    state = start.state_dict()
    if not model.config.generator.blend_source:
        state = {k: v for k, v in state.items() if not k.startswith(BLEND_HEAD)}
    mine = model.state_dict()
    if any(key in mine and mine[key].shape != value.shape for key, value in state.items()):
        names = shaping_settings(start.config, model.config)
        raise CheckpointError("the --init checkpoint's weights have other shapes than the "
                              f"run's: {differences(start.config, model.config, WHOSE, names)}")
    result = model.load_state_dict(state, strict=False)
    fresh = ("discriminator.",) + ((BLEND_HEAD,) if not start.config.generator.blend_source
                                   else ())
    missing = [k for k in result.missing_keys if not k.startswith(fresh)]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"the --init checkpoint does not fit: missing {missing[:4]}, "
                              f"unexpected {result.unexpected_keys[:4]}")
    model.provenance["initialised_from"] = start.provenance.get("name", "a checkpoint")
    for key in INHERITED:  # what the weights are for carries over (--subject may add to it)
        if key in start.provenance:
            model.provenance.setdefault(key, start.provenance[key])


def _flat(tree: dict, prefix: str = "") -> dict:
    """A config's nested dict as {'generator.block_expansion': 8, ...}; a part that is off
    (None: no kp_embedding) is one entry."""
    return {f"{prefix}{k}": v for key, value in tree.items()
            for k, v in (_flat(value, f"{key}.").items() if isinstance(value, dict)
                         else [(key, value)])}


_ABSENT = object()  # a setting of a part that one config has off


def _differing(first: dict, second: dict) -> list[str]:
    """The settings where two configs' dicts differ; where a part is on in one and off in
    the other, the part's name alone."""
    a, b = _flat(first), _flat(second)
    names = []
    for name in dict.fromkeys([*a, *b]):
        if a.get(name, _ABSENT) == b.get(name, _ABSENT):
            continue
        parts = name.split(".")
        off = next((p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
                    if a.get(p, _ABSENT) is None or b.get(p, _ABSENT) is None), name)
        names.append(off)
    return list(dict.fromkeys(names))


def _get(tree: dict, name: str):
    """A setting (or a part, as a dict) of a config's dict by its dotted name."""
    for key in name.split("."):
        tree = tree[key]
    return tree


def _shown(value) -> str:
    return "on" if isinstance(value, dict) else "off" if value is None else str(value)


def differences(first: ModelConfig, second: ModelConfig, labels: tuple[str, str],
                names: list[str] | None = None, shown: int = 4) -> str:
    """'name: a in FIRST, b in SECOND' (``labels``) for the settings where two architectures
    differ (or those of ``names`` alone), the first ``shown``."""
    a, b = first.to_dict(), second.to_dict()
    names = _differing(a, b) if names is None else names
    return "; ".join(f"{name}: {_shown(_get(a, name))} in {labels[0]}, "
                     f"{_shown(_get(b, name))} in {labels[1]}" for name in names[:shown]) + (
        f" (and {len(names) - shown} more)" if len(names) > shown else "") or "none listed"


def shaping_settings(start: ModelConfig, run: ModelConfig) -> list[str]:
    """Of the settings where ``run`` differs from ``start`` (a part on in one and off in the
    other counting as one), those that give a weight another shape, each tried alone over
    ``start``'s (networks built on the meta device: no memory); all of them where none
    does alone."""
    a, b = start.to_dict(), run.to_dict()
    names = _differing(a, b)
    shapes = _shapes(a)
    shaping = []
    for name in names:
        trial = start.to_dict()
        *parents, leaf = name.split(".")
        (_get(trial, ".".join(parents)) if parents else trial)[leaf] = _get(b, name)
        if _shapes(trial) != shapes:
            shaping.append(name)
    return shaping or names


def _shapes(config: dict) -> dict[str, tuple[int, ...]] | None:
    """The shape of each weight of the networks ``config`` describes (None: it cannot be
    built)."""
    try:
        with torch.device("meta"):
            model = build_model(ModelConfig.from_dict(config))
    except Exception:  # (a setting that needs another alongside: said with the others)
        return None
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}
