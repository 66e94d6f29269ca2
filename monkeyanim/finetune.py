"""Starting a training run from another checkpoint's weights, and training only some of them
(train.init and train.trainable)."""

from __future__ import annotations

import dataclasses

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
    """Fine-tune from ``start`` (same architecture): every weight it has is copied; a checkpoint
    shipped without its discriminator, or trained without the blend head, leaves those freshly
    initialised. A start with the head, for a run without it, leaves its head out (taichi64
    trains without it and gets it back, untrained, when exported)."""
    if _weight_layout(start.config) != _weight_layout(model.config):
        raise CheckpointError("the --init checkpoint's architecture differs from the run's")
    state = start.state_dict()
    if not model.config.generator.blend_source:
        state = {k: v for k, v in state.items() if not k.startswith(BLEND_HEAD)}
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


def _weight_layout(config: ModelConfig) -> ModelConfig:
    """The settings that shape the weights the two share: align_flow changes none and
    blend_source only adds its own, so a run may turn either on over weights without them."""
    return dataclasses.replace(config, generator=dataclasses.replace(
        config.generator, align_flow=False, blend_source=False))
