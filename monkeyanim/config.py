"""Typed architecture settings, saved inside every checkpoint so a file rebuilds its model alone.

Field names follow the authors' YAML keys (``model_params``) where one exists, so their configs
map onto these dataclasses one to one (:func:`ModelConfig.from_authors`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, first_line

KpVariance = str | float  # 'matrix', 'single', or a fixed variance
HEATMAP_TYPES = ("gaussian", "difference")
INTERPOLATION_MODES = ("nearest", "trilinear")


@dataclass
class EmbeddingConfig:
    """How keypoints become input channels (the authors' MovementEmbeddingModule)."""

    use_heatmap: bool = True
    use_deformed_source_image: bool = False
    use_difference: bool = False
    heatmap_type: str = "gaussian"  # 'gaussian' (driving only) or 'difference' (driving - source)
    norm_const: float | str = "sum"  # divide heatmaps by a constant, or by their sum
    scale_factor: float = 1.0


@dataclass
class KPDetectorConfig:
    """Hourglass widths (block_expansion doubling per block, up to max_features), softmax
    temperature, input scale and the floor on covariance singular values."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    temperature: float = 0.1
    scale_factor: float = 1.0
    clip_variance: float | None = None


@dataclass
class DenseMotionConfig:
    """The hourglass that turns per-keypoint embeddings into masks and a residual flow."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    mask_embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    use_mask: bool = True
    use_correction: bool = True
    bg_init: float = 2.0
    num_group_blocks: int = 0
    scale_factor: float = 1.0


@dataclass
class GeneratorConfig:
    """Encoder/decoder widths and depth, refinement blocks, and its two sub-parts (None: off)."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    num_refinement_blocks: int = 4
    dense_motion: DenseMotionConfig | None = field(default_factory=DenseMotionConfig)
    kp_embedding: EmbeddingConfig | None = field(default_factory=EmbeddingConfig)
    interpolation_mode: str = "nearest"  # how flow and embeddings are resized: 'nearest' or 'trilinear'
    # Resize the flow to each feature map's size bilinearly with align_corners=True, as the
    # sampling grid is laid out, so that the identity flow stays the identity at every size.
    # False (the authors' way, by interpolation_mode) moves pixels by up to a pixel (nearest)
    # or half one (trilinear) when the flow is computed below the frame size (dense motion
    # scale_factor < 1), which the decoder must learn to undo.
    align_flow: bool = False
    # Not in the paper: blend the source warped by the flow into the output, with a per-pixel
    # weight that a 3x3 convolution learns from the last features (frames = m * warped +
    # (1 - m) * decoded). Unseen faces come out closer to the warped source than to what the
    # decoder paints (training/README.md); an --init run adds it to weights trained without it.
    blend_source: bool = False


@dataclass
class DiscriminatorConfig:
    """Down-block widths and depth, input scale and keypoint embedding (None: frames only)."""

    block_expansion: int = 64
    max_features: int = 512
    num_blocks: int = 4
    scale_factor: float = 1.0
    kp_embedding: EmbeddingConfig | None = None


@dataclass
class ModelConfig:
    """The whole architecture plus the frame size it was trained at."""

    num_kp: int = 10
    kp_variance: KpVariance = "matrix"
    num_channels: int = 3
    frame_size: tuple[int, int] = (64, 64)  # (H, W) in pixels
    kp_detector: KPDetectorConfig = field(default_factory=KPDetectorConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        try:
            return _build(cls, data)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"invalid model config: {exc}") from None

    @classmethod
    def from_authors(cls, config: dict[str, Any]) -> ModelConfig:
        """Map an authors' config (with ``model_params`` and ``frame_shape``) onto a ModelConfig."""
        try:
            return _from_authors(config)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"invalid authors' config: {exc}") from None


def check_whole(value: Any, name: str, smallest: int = 1) -> None:
    """Refuse ``value`` unless it is an int (not a bool) of at least ``smallest``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
        raise ConfigError(f"{name} must be a whole number of at least {smallest}, not {value!r}")


def is_positive_number(value: Any) -> bool:
    """An int or float (not a bool) above 0, and finite."""
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0
            and math.isfinite(value))


def _check(config: ModelConfig) -> None:
    """Settings no network can be built or run with, refused with what is wrong (the frame
    size by :func:`frame_size_problem`)."""
    check_whole(config.num_kp, "num_kp")
    check_whole(config.num_channels, "num_channels")
    variance = config.kp_variance
    if variance not in ("matrix", "single") and not is_positive_number(variance):
        raise ConfigError(f"kp_variance must be matrix, single or a positive number, "
                          f"not {variance!r}")
    if not isinstance(config.frame_size, (list, tuple)) or len(config.frame_size) != 2:
        raise ConfigError(f"frame_size must be [height, width], not {config.frame_size!r}")
    if not is_positive_number(config.kp_detector.temperature):
        raise ConfigError(f"kp_detector.temperature must be positive, not "
                          f"{config.kp_detector.temperature!r}")
    for side in config.frame_size:
        check_whole(side, "each side of frame_size")
    discriminator = ("discriminator", config.discriminator, config.discriminator.scale_factor)
    for name, net, scale in [*_hourglasses(config), discriminator]:
        check_whole(net.block_expansion, f"{name}.block_expansion")
        check_whole(net.max_features, f"{name}.max_features")
        check_whole(net.num_blocks, f"{name}.num_blocks", 0)
        if not is_positive_number(scale):
            raise ConfigError(f"{name}.scale_factor must be positive, not {scale!r}")
    _check_flags(config)
    if config.generator.interpolation_mode not in INTERPOLATION_MODES:
        raise ConfigError(f"generator.interpolation_mode must be one of "
                          f"{', '.join(INTERPOLATION_MODES)}, not "
                          f"{config.generator.interpolation_mode!r}")
    for name, embedding in _embeddings(config):
        check_embedding(embedding, name)
    problem = frame_size_problem(config, *config.frame_size)
    if problem:
        raise ConfigError(problem)


def _embeddings(config: ModelConfig) -> list[tuple[str, EmbeddingConfig]]:
    """(name, settings) of each keypoint embedding the config turns on."""
    dense = config.generator.dense_motion
    found = [("generator.dense_motion.mask_embedding", dense and dense.mask_embedding),
             ("generator.kp_embedding", config.generator.kp_embedding),
             ("discriminator.kp_embedding", config.discriminator.kp_embedding)]
    return [(name, embedding) for name, embedding in found if embedding is not None]


def _check_flags(config: ModelConfig) -> None:
    """Settings that are on or off must be true or false: a string such as "no" would
    count as on."""
    generator, dense = config.generator, config.generator.dense_motion
    flags = [("generator.blend_source", generator.blend_source),
             ("generator.align_flow", generator.align_flow)]
    if dense is not None:
        flags += [("generator.dense_motion.use_mask", dense.use_mask),
                  ("generator.dense_motion.use_correction", dense.use_correction)]
    for name, value in flags:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, not {value!r}")


def check_embedding(embedding: EmbeddingConfig, name: str) -> None:
    """ConfigError unless the embedding gives at least one kind of channel, of a known
    heatmap type and normalisation."""
    for flag in ("use_heatmap", "use_difference", "use_deformed_source_image"):
        if not isinstance(getattr(embedding, flag), bool):
            raise ConfigError(f"{name}.{flag} must be true or false, not "
                              f"{getattr(embedding, flag)!r}")
    if not (embedding.use_heatmap or embedding.use_difference
            or embedding.use_deformed_source_image):
        raise ConfigError(f"{name} needs use_heatmap, use_difference or "
                          "use_deformed_source_image")
    if embedding.heatmap_type not in HEATMAP_TYPES:
        raise ConfigError(f"{name}.heatmap_type must be one of {', '.join(HEATMAP_TYPES)}, "
                          f"not {embedding.heatmap_type!r}")
    if embedding.norm_const != "sum" and not is_positive_number(embedding.norm_const):
        raise ConfigError(f"{name}.norm_const must be 'sum' or a positive number, not "
                          f"{embedding.norm_const!r}")
    if not is_positive_number(embedding.scale_factor):
        raise ConfigError(f"{name}.scale_factor must be positive, not "
                          f"{embedding.scale_factor!r}")


def _hourglasses(config: ModelConfig) -> list[tuple[str, Any, float]]:
    """(name, settings, input scale) of each network that halves its input num_blocks times
    and doubles it back, joining the two halves at every size."""
    generator = config.generator
    nets = [("kp_detector", config.kp_detector, config.kp_detector.scale_factor),
            ("generator", generator, 1.0)]
    if generator.dense_motion is not None:
        nets.append(("generator.dense_motion", generator.dense_motion,
                     generator.dense_motion.scale_factor))
    return nets


def frame_size_problem(config: ModelConfig, height: int, width: int) -> str | None:
    """Why frames of height x width pixels cannot go through the networks, or None: each
    hourglass's input side (after its scale factor) must be a multiple of 2 ** num_blocks."""
    for name, net, scale in _hourglasses(config):
        step = 2 ** net.num_blocks
        for side in (height, width):
            scaled = int(side * scale)  # as blocks.downscale rounds
            if scaled < step or scaled % step:
                return (f"{name}: {_side(side, scale)} must be a multiple of "
                        f"2 ** num_blocks = {step}")
    return None


def _side(side: int, scale: float) -> str:
    return f"a frame side of {side} px" + (f" (x {scale} = {int(side * scale)})"
                                           if scale != 1 else "")


def check_rgb(config: ModelConfig) -> None:
    """Training only: the frames it reads are RGB (grey and RGBA videos are converted)."""
    if config.num_channels != 3:
        raise ConfigError(f"training reads RGB frames: num_channels must be 3, not "
                          f"{config.num_channels}")


def check_discriminator(config: ModelConfig) -> None:
    """Training only (animating needs no discriminator): every down block takes 3 pixels off
    with its 4x4 convolution and then halves, and must keep at least one."""
    net = config.discriminator
    for side in config.frame_size:
        scaled = int(side * net.scale_factor)
        for _ in range(net.num_blocks):
            scaled -= 3
            if scaled < 2:
                raise ConfigError(f"discriminator: {_side(side, net.scale_factor)} is too small "
                                  f"for {net.num_blocks} blocks")
            scaled //= 2


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) dataclass from plain dicts, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} expects a mapping, got {type(data).__name__}")
    nested = {
        "mask_embedding": EmbeddingConfig, "kp_embedding": EmbeddingConfig,
        "dense_motion": DenseMotionConfig, "kp_detector": KPDetectorConfig,
        "generator": GeneratorConfig, "discriminator": DiscriminatorConfig,
    }
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")  # (a KeyError's
        # message would be shown in quotes)
    kwargs = {}
    for key, value in data.items():
        if key in nested and value is not None and not dataclasses.is_dataclass(value):
            value = _build(nested[key], value)
        elif key == "frame_size":
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"frame_size must be [height, width], not {value!r}")
            value = tuple(int(v) for v in value)
        kwargs[key] = value
    return cls(**kwargs)


def _embedding(params: dict[str, Any] | None) -> EmbeddingConfig | None:
    return None if params is None else _build(EmbeddingConfig, params)


def _from_authors(config: dict[str, Any]) -> ModelConfig:
    model = config.get("model_params", config)
    common = model["common_params"]
    gen = dict(model["generator_params"])
    dense = gen.pop("dense_motion_params", None)
    if dense is not None:
        dense = dict(dense)
        dense["mask_embedding"] = _embedding(dense.pop("mask_embedding_params"))
        dense = _build(DenseMotionConfig, dense)
    gen["dense_motion"] = dense
    gen["kp_embedding"] = _embedding(gen.pop("kp_embedding_params", None))
    disc = dict(model["discriminator_params"])
    disc["kp_embedding"] = _embedding(disc.pop("kp_embedding_params", None))
    dataset = config.get("dataset_params") or {}  # their YAML files keep the size there
    frame_shape = (config.get("frame_shape") or dataset.get("frame_shape")
                   or dataset.get("image_shape") or [64, 64, 3])
    return ModelConfig(
        num_kp=common["num_kp"],
        kp_variance=common.get("kp_variance", "matrix"),
        num_channels=common.get("num_channels", 3),
        frame_size=(int(frame_shape[0]), int(frame_shape[1])),
        kp_detector=_build(KPDetectorConfig, model["kp_detector_params"]),
        generator=_build(GeneratorConfig, gen),
        discriminator=_build(DiscriminatorConfig, disc),
    )


YAML_SUFFIXES = (".yaml", ".yml")  # the authors publish their configs as YAML


def load_config_file(path: str | Path) -> ModelConfig:
    """Read a JSON config (a ModelConfig dict, or an authors' config with ``model_params``) or
    an authors' YAML config as they publish them (config/*.yaml: model_params and
    dataset_params' frame size)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix.lower() in YAML_SUFFIXES else json.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {first_line(exc)}") from None
    if isinstance(data, dict) and ("model_params" in data or "common_params" in data):
        return ModelConfig.from_authors(data)
    return ModelConfig.from_dict(data)
