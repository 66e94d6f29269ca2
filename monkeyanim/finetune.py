"""Starting a training run from another checkpoint's weights, and training only some of them
(train.init and train.trainable)."""

from __future__ import annotations

from .config import ModelConfig
from .errors import CheckpointError, ConfigError
from .models import MonkeyNet

# the blend head's weights: a run may start with or without them whatever its config says
BLEND_HEAD = "generator.blend_mask."


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
        raise CheckpointError("the --init checkpoint's weights have other shapes than the "
                              f"run's: {differences(start.config, model.config)}")
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


def differences(first: ModelConfig, second: ModelConfig, shown: int = 4) -> str:
    """The settings where two architectures differ, 'name: a, not b' (the first ``shown``)."""
    def flat(tree: dict, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for key, value in tree.items()
                for k, v in (flat(value, f"{key}.").items() if isinstance(value, dict)
                             else [(key, value)])}

    a, b = flat(first.to_dict()), flat(second.to_dict())
    names = [name for name in a if a[name] != b.get(name)]
    return "; ".join(f"{name}: {a[name]}, not {b.get(name)}" for name in names[:shown]) + (
        f" (and {len(names) - shown} more)" if len(names) > shown else "") or "none listed"
