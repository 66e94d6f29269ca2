"""The project's checkpoint format (one safetensors file) and the converter from the authors'.

A checkpoint holds the weights of ``kp_detector.*``, ``generator.*`` and optionally
``discriminator.*`` plus, in its metadata, the model config (JSON) and provenance (JSON).
Loading it executes no code.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from .config import ModelConfig
from .errors import CheckpointError, ConfigError, first_line
from .files import atomic_write
from .models import MonkeyNet, build_model

FORMAT = "monkeyanim/1"
PREDICTOR_FORMAT = "monkeyanim-predictor/1"  # prediction.py's files
AUTHOR_PARTS = ("kp_detector", "generator", "discriminator")
MAX_KEYS_LISTED = 8
# a training run's folder holds its weights and, for --resume, its optimisers' state
MODEL_FILE, STATE_FILE = "model.safetensors", "state.pt"


def save_checkpoint(model: MonkeyNet, path: str | Path, provenance: dict | None = None,
                    with_discriminator: bool = True, half: bool = False) -> None:
    """Write ``model`` as one safetensors file, atomically (no partial file on interruption).

    ``half`` stores floating-point weights as float16, which halves the file (the bundled
    checkpoints use it to stay small); loading casts them back to the model's float32.
    """
    data = checkpoint_bytes(model, provenance, with_discriminator, half)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def checkpoint_bytes(model: MonkeyNet, provenance: dict | None = None,
                     with_discriminator: bool = True, half: bool = False) -> bytes:
    """The safetensors file save_checkpoint writes, as bytes."""
    state = model.state_dict()
    if not with_discriminator:
        state = {k: v for k, v in state.items() if not k.startswith("discriminator.")}
    tensors = {k: v.detach().to("cpu") for k, v in state.items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    metadata = {"format": FORMAT, "config": model.config.to_json(),
                "provenance": json.dumps(provenance if provenance is not None
                                         else model.provenance, sort_keys=True)}
    # bytes first: written by Python, a full disk is an OSError (safetensors' own writer
    # raises an opaque SafetensorError)
    return safetensors_bytes(tensors, metadata=metadata)


def read_metadata(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The config and provenance stored in a checkpoint, without reading its weights."""
    with _open(path) as handle:
        return _parse_metadata(path, handle.metadata())


def file_format(path: str | Path) -> str | None:
    """The format a safetensors file's metadata names (FORMAT for a checkpoint,
    PREDICTOR_FORMAT for a predictor), or None: no such entry, or not readable as one."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return (handle.metadata() or {}).get("format")
    except Exception:  # noqa: BLE001 - safetensors' own error types: it is not one of ours
        return None


def load_checkpoint(path: str | Path) -> MonkeyNet:
    """Rebuild a model from a project checkpoint alone (strict: every key must match)."""
    with _open(path) as handle:
        config, provenance = _parse_metadata(path, handle.metadata())
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    has_discriminator = any(k.startswith("discriminator.") for k in state)
    model = build_model(config, with_discriminator=has_discriminator, provenance=provenance)
    load_strict(model, state, path)
    return model.eval()


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint "
                              f"({first_line(exc)})") from None


def _parse_metadata(path, metadata: dict[str, str] | None) -> tuple[ModelConfig, dict]:
    metadata = metadata or {}
    if metadata.get("format") == PREDICTOR_FORMAT:
        raise CheckpointError(f"{path} is an image-to-video predictor, not a Monkey-Net "
                              "checkpoint: give it as predict's --predictor")
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a monkeyanim checkpoint "
                              f"(no '{FORMAT}' metadata)")
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
        provenance = json.loads(metadata.get("provenance", "{}"))
    except (ValueError, TypeError, KeyError, AttributeError, ConfigError) as exc:
        # bad JSON, a value of the wrong kind, or settings no network can have
        raise CheckpointError(f"{path} has a corrupt config in its metadata: {exc}") from None
    problem = _provenance_problem(provenance)
    if problem:
        raise CheckpointError(f"{path} has corrupt provenance in its metadata: {problem}")
    return config, provenance


# what the code reads from a checkpoint's provenance, and the kinds it takes
PROVENANCE_KINDS = {"name": str, "default_mode": str, "face_model": bool, "body_model": bool,
                    "iterations": int, "metrics": dict}


def _provenance_problem(provenance) -> str | None:
    """What is wrong with a provenance read from a file (a mapping whose entries that the
    code reads are of their kind, default_mode a transfer mode), or None."""
    if not isinstance(provenance, dict):
        return f"a {type(provenance).__name__}, not a mapping"
    for key, kind in PROVENANCE_KINDS.items():
        if key in provenance and not isinstance(provenance[key], kind):
            return f"{key} is {provenance[key]!r}, not a {kind.__name__}"
    if provenance.get("default_mode", "relative") not in ("relative", "absolute"):
        return f"default_mode is {provenance['default_mode']!r}, not relative or absolute"
    return None


def _describe_keys(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_LISTED])
    more = f" (+{len(keys) - MAX_KEYS_LISTED} more)" if len(keys) > MAX_KEYS_LISTED else ""
    return f"{label} {len(keys)}: {shown}{more}"


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source) -> None:
    """load_state_dict(strict=True), reporting every mismatch in one readable line."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    both = set(expected) & set(state)
    wrong = sorted(k for k in both if expected[k].shape != state[k].shape)
    # whole numbers where floats belong (int8 weights would be cast, silently, to garbage)
    kind = sorted(k for k in both
                  if expected[k].is_floating_point() != state[k].is_floating_point())
    problems = []
    if missing:
        problems.append(_describe_keys("missing", missing))
    if unexpected:
        problems.append(_describe_keys("unexpected", unexpected))
    if wrong:
        problems.append(_describe_keys("wrong shape", [
            f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong]))
    if kind:
        problems.append(_describe_keys("wrong dtype", [
            f"{k} {state[k].dtype} for {expected[k].dtype}" for k in kind]))
    if problems:
        raise CheckpointError(f"{source} does not match the config: " + "; ".join(problems))
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:  # a diverged run's weights make black frames, quietly
        raise CheckpointError(f"{source} holds weights that are not finite numbers "
                              f"(in {len(broken)} tensors, e.g. {broken[0]}): the training "
                              "that wrote it diverged")
    model.load_state_dict(state, strict=True)


# what torch.load says of a file cut short: a zip without its directory (written at the
# end), or the old format's stream ending early
TRUNCATION_SIGNS = ("failed finding central directory", "unexpected EOF", "Ran out of input")


def _load_error_reason(exc: Exception) -> str:
    """torch.load's error in a few words. A file that the weights-only unpickler refuses gets
    its reason, not torch's advice to load it unsafely (which this project never does)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        return ("not a PyTorch file of tensors and plain values"
                + (f" ({detail[0].strip()})" if detail and detail[0].strip() else ""))
    if not isinstance(exc, (OSError, RuntimeError)) or not text:
        return "not a PyTorch file"  # what unpickling stray bytes raises says nothing more
    first = text.splitlines()[0].split(". ")[0]  # torch's first sentence says what went wrong
    cut = any(sign in text for sign in TRUNCATION_SIGNS)
    return first + (" (the file looks cut short: download or copy it again)" if cut else "")


def convert_authors_checkpoint(path: str | Path, config: ModelConfig,
                               provenance: dict | None = None) -> MonkeyNet:
    """Load an authors' ``.pth.tar`` (3D convs, kernel (1, k, k)) into the 2D model of ``config``."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # (torch warns of odd pickle protocols: the error says)
            warnings.simplefilter("ignore")
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike mean "unreadable"
        raise CheckpointError(f"cannot read {path} as an authors' checkpoint: "
                              f"{_load_error_reason(exc)}") from None
    if not isinstance(raw, dict) or not {"kp_detector", "generator"} <= set(raw):
        raise CheckpointError(f"{path} is not an authors' Monkey-Net checkpoint "
                              "(expected 'kp_detector' and 'generator' entries)")
    parts = [p for p in AUTHOR_PARTS if isinstance(raw.get(p), dict)]
    model = build_model(config, with_discriminator="discriminator" in parts, provenance=provenance)
    state = {}
    for part in parts:
        for key, value in raw[part].items():
            state[f"{part}.{key.removeprefix('module.')}"] = _to_2d(value, f"{part}.{key}", path)
    # Checkpoints from PyTorch 0.4.0 predate BatchNorm's step counter; it is unused in eval.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    load_strict(model, state, path)
    model.provenance.setdefault("converted_from", path.name)
    model.provenance.setdefault("iterations", int(raw.get("it", 0) or 0))
    return model.eval()


def _to_2d(value: torch.Tensor, key: str, path: Path) -> torch.Tensor:
    if value.ndim != 5:
        return value
    if value.shape[2] != 1:
        raise CheckpointError(f"{path}: {key} has a temporal kernel {tuple(value.shape)}; only "
                              "per-frame (1, k, k) convolutions are supported")
    return value.squeeze(2)  # (O, I, 1, k, k) -> (O, I, k, k)
