"""The authors' eight published architectures (their config/*.yaml), as ModelConfig presets.

The numbers are the authors'; ``tests/test_configs.py`` checks every preset against their
published configs so that their released checkpoints convert.
"""

from __future__ import annotations

from .config import (DenseMotionConfig, DiscriminatorConfig, EmbeddingConfig, GeneratorConfig,
                     KPDetectorConfig, ModelConfig)
from .errors import ConfigError


def _preset(*, num_kp: int = 10, width: int = 32, max_features: int = 1024, gen_blocks: int = 5,
            clip_variance: float | None = 0.001, norm_const: float | str = 100,
            kp_scale: float = 1.0, motion_scale: float = 1.0, embedding_scale: float = 1.0,
            group_blocks: int = 2, use_difference: bool = False, interpolation: str = "nearest",
            frame: int = 64) -> ModelConfig:
    """The authors' configs differ only in these knobs; everything else is shared."""
    mask_embedding = EmbeddingConfig(use_heatmap=True, use_deformed_source_image=True,
                                     use_difference=use_difference, heatmap_type="difference",
                                     norm_const=norm_const)
    return ModelConfig(
        num_kp=num_kp, kp_variance="matrix", num_channels=3, frame_size=(frame, frame),
        kp_detector=KPDetectorConfig(block_expansion=width, max_features=max_features, num_blocks=5,
                                     temperature=0.1, scale_factor=kp_scale,
                                     clip_variance=clip_variance),
        generator=GeneratorConfig(
            block_expansion=width, max_features=max_features, num_blocks=gen_blocks,
            num_refinement_blocks=4, interpolation_mode=interpolation,
            dense_motion=DenseMotionConfig(block_expansion=width, max_features=max_features,
                                           num_blocks=5, mask_embedding=mask_embedding,
                                           use_mask=True, use_correction=True,
                                           num_group_blocks=group_blocks, scale_factor=motion_scale),
            kp_embedding=EmbeddingConfig(use_heatmap=True, heatmap_type="difference",
                                         norm_const=norm_const, scale_factor=embedding_scale),
        ),
        discriminator=DiscriminatorConfig(block_expansion=32, max_features=256, num_blocks=4,
                                          kp_embedding=EmbeddingConfig(norm_const=norm_const)),
    )


AUTHOR_PRESETS: dict[str, ModelConfig] = {
    "actions": _preset(max_features=512, clip_variance=None),
    "bair": _preset(max_features=512, norm_const="sum"),
    "moving-gif": _preset(gen_blocks=6, kp_scale=0.5, motion_scale=0.5, embedding_scale=0.5,
                          use_difference=True, frame=128),
    "nemo": _preset(max_features=512),
    "shapes": _preset(num_kp=4, width=16, max_features=128, clip_variance=None, norm_const=10,
                      group_blocks=0),
    "taichi": _preset(),
    "vox-full": _preset(gen_blocks=7, embedding_scale=0.25, interpolation="trilinear", frame=256),
    "vox": _preset(gen_blocks=7, kp_scale=0.25, motion_scale=0.25, embedding_scale=0.25,
                   interpolation="trilinear", frame=256),
}


def available_presets() -> list[str]:
    return sorted(AUTHOR_PRESETS)


def get_preset(name: str) -> ModelConfig:
    try:
        return AUTHOR_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown config {name!r}; choose one of: "
                          f"{', '.join(available_presets())}, or a .yaml or .json file") from None
