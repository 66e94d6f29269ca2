"""All eight of the authors' published configs: presets match them, and each builds with the
authors' parameter layout so their released checkpoints convert; and align_flow, the one
architecture setting of ours beyond theirs."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from monkeyanim.checkpoint import convert_authors_checkpoint, load_checkpoint, save_checkpoint
from monkeyanim.config import GeneratorConfig, ModelConfig, load_config_file
from monkeyanim.errors import ConfigError
from monkeyanim.models import build_model
from monkeyanim.models.blocks import make_coordinate_grid
from monkeyanim.models.generator import Generator
from monkeyanim.presets import AUTHOR_PRESETS, get_preset

NAMES = ["taichi", "nemo", "bair", "moving-gif", "vox", "vox-full", "actions", "shapes"]


@pytest.fixture(scope="module")
def author_configs(fixture_dir):
    return json.loads((fixture_dir / "author-configs.json").read_text())


def test_there_are_exactly_the_eight_presets(author_configs):
    assert sorted(AUTHOR_PRESETS) == sorted(NAMES) == sorted(author_configs)


@pytest.mark.parametrize("name", NAMES)
def test_preset_equals_authors_config(name, author_configs):
    assert ModelConfig.from_authors(author_configs[name]) == get_preset(name)


def expected_shapes(params: dict) -> dict[str, tuple]:
    """A few layer shapes derived by hand from the authors' architecture and their config."""
    common, gen = params["common_params"], params["generator_params"]
    dense, disc = gen["dense_motion_params"], params["discriminator_params"]
    k, be, mf, nb = common["num_kp"], gen["block_expansion"], gen["max_features"], gen["num_blocks"]
    mask = dense["mask_embedding_params"]
    per_kp = 1 + 2 * mask.get("use_difference", False) + 3
    dense_in = per_kp * (k + 1)
    groups = dense.get("num_group_blocks", 0)
    shapes = {
        "generator.dense_motion_module.hourglass.encoder.down_blocks.0.conv.weight":
            (min(dense["max_features"], dense["block_expansion"] * 2), dense_in, 3, 3),
        "generator.dense_motion_module.hourglass.decoder.conv.weight":
            (k + 3, dense["block_expansion"] + dense_in, 3, 3),
        "generator.video_decoder.up_blocks.0.conv.weight":
            (min(mf, be * 2 ** (nb - 1)), min(mf, be * 2 ** nb) + k, 3, 3),
        f"generator.appearance_encoder.down_blocks.{nb - 1}.conv.weight":
            (min(mf, be * 2 ** nb), min(mf, be * 2 ** (nb - 1)), 3, 3),
        "generator.refinement_module.r3.conv2.weight": (be + 3 + k, be + 3 + k, 3, 3),
        "generator.refinement_module.conv-last.weight": (3, be + 3 + k, 1, 1),
        "kp_detector.predictor.decoder.conv.weight":
            (k, params["kp_detector_params"]["block_expansion"] + 3, 3, 3),
        "discriminator.down_blocks.0.conv.weight": (disc["block_expansion"] * 2, 3 + k, 4, 4),
        "discriminator.conv.weight": (1, min(disc["max_features"],
                                             disc["block_expansion"] * 2 ** disc["num_blocks"]), 1, 1),
    }
    if groups:
        shapes[f"generator.dense_motion_module.group_blocks.{groups - 1}.conv.weight"] = (
            dense_in, per_kp, 1, 1)
    return shapes


@pytest.mark.parametrize("name", NAMES)
def test_preset_builds_with_authors_layout_and_converts(name, author_configs, tmp_path):
    torch.manual_seed(0)
    model = build_model(get_preset(name))
    state = model.state_dict()
    for key, shape in expected_shapes(author_configs[name]["model_params"]).items():
        assert tuple(state[key].shape) == shape, key
    groups = author_configs[name]["model_params"]["generator_params"]["dense_motion_params"].get(
        "num_group_blocks", 0)
    assert not any(k.startswith(f"generator.dense_motion_module.group_blocks.{groups}.")
                   for k in state)
    # Write the weights the way the authors' code stores them (Conv3d, depth 1) and convert back.
    authors = {part: {} for part in ("kp_detector", "generator", "discriminator")}
    for key, value in state.items():
        part, rest = key.split(".", 1)
        authors[part][rest] = value.unsqueeze(2) if value.ndim == 4 else value
    path = tmp_path / f"{name}.pth.tar"
    torch.save({**authors, "epoch": 3, "it": 1234}, path)
    converted = convert_authors_checkpoint(path, get_preset(name))
    assert converted.provenance["iterations"] == 1234
    for key, value in converted.state_dict().items():
        assert torch.equal(value, state[key]), key
    # and it runs at its frame size (scale factors, trilinear flow resizing, 7-block generator)
    height, width = converted.config.frame_size
    frames = torch.rand(2, 3, height, width)
    kp = converted.keypoints(frames)
    assert kp.mean.shape == (2, converted.config.num_kp, 2) and kp.mean.abs().max() <= 1
    out = converted.generate(frames[0], kp[:1], kp)
    assert out.frames.shape == out.deformed.shape == (2, 3, height, width)
    assert 0 <= out.frames.min() and out.frames.max() <= 1


def test_config_file_accepts_authors_json_and_our_json(author_configs, tmp_path):
    authors_file = tmp_path / "authors.json"
    authors_file.write_text(json.dumps(author_configs["moving-gif"]))
    ours_file = tmp_path / "ours.json"
    ours_file.write_text(get_preset("moving-gif").to_json())
    assert load_config_file(authors_file) == load_config_file(ours_file) == get_preset("moving-gif")
    assert get_preset("moving-gif").frame_size == (128, 128)


@pytest.mark.parametrize("name", ["moving-gif", "vox", "shapes"])
def test_config_file_accepts_the_authors_yaml_as_they_publish_it(name, author_configs, tmp_path):
    """Their config/*.yaml keep the frame size in dataset_params (image_shape), beside
    model_params and their training settings: read as they are, it is their preset."""
    import yaml

    published = {k: v for k, v in author_configs[name].items() if k != "frame_shape"}
    published["dataset_params"] = {"root_dir": f"data/{name}",
                                   "image_shape": author_configs[name]["frame_shape"]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(published))
    assert load_config_file(path) == get_preset(name)
    path.write_text("model_params: [unclosed")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config_file(path)


def test_bad_config_names_and_files(tmp_path):
    with pytest.raises(ConfigError, match="taichi"):
        get_preset("tachi")
    bad = tmp_path / "bad.json"
    bad.write_text('{"num_kp": 10, "no_such_field": 1}')
    with pytest.raises(ConfigError, match="no_such_field"):
        load_config_file(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(bad)


IMPOSSIBLE = [  # settings no network builds or runs with, and what the error names
    ({"num_kp": 0}, "num_kp"), ({"kp_variance": "foo"}, "kp_variance"),
    ({"frame_size": [0, 64]}, "frame_size"), ({"frame_size": [64]}, "frame_size"),
    ({"frame_size": 64}, "frame_size must be [height, width], not 64"),
    ({"frame_size": [100, 100]}, "kp_detector: a frame side of 100 px must be a multiple of"),
    ({"generator": {"num_blocks": 7}}, "generator: a frame side of 64 px"),
    ({"generator": {"dense_motion": {"scale_factor": 0.25}}},
     "generator.dense_motion: a frame side of 64 px (x 0.25 = 16)"),
    ({"kp_detector": {"scale_factor": 0}}, "kp_detector.scale_factor"),
    ({"generator": {"block_expansion": 0}}, "generator.block_expansion"),
    ({"discriminator": {"num_blocks": -1}}, "discriminator.num_blocks"),
    ({"generator": {"kp_embedding": {"heatmap_type": "box"}}},
     "generator.kp_embedding.heatmap_type must be one of gaussian, difference"),
    ({"generator": {"dense_motion": {"mask_embedding": {"use_heatmap": False}}}},
     "generator.dense_motion.mask_embedding needs use_heatmap"),
    ({"generator": {"kp_embedding": {"norm_const": 0}}}, "norm_const must be 'sum'"),
    ({"generator": {"interpolation_mode": "cubic"}}, "interpolation_mode must be one of")]


@pytest.mark.parametrize("change,message", IMPOSSIBLE, ids=[m for _, m in IMPOSSIBLE])
def test_impossible_architectures_are_refused_with_what_is_wrong(change, message):
    data = get_preset("shapes").to_dict()
    for key, value in change.items():
        if isinstance(value, dict):
            for inner, v in value.items():
                if isinstance(v, dict):
                    data[key][inner].update(v)
                else:
                    data[key][inner] = v
        else:
            data[key] = value
    with pytest.raises(ConfigError) as error:
        ModelConfig.from_dict(data)
    assert message in str(error.value)


def test_frames_the_networks_cannot_take_are_an_input_error_naming_the_network():
    """With the keypoint detector at half size, its 5 blocks need frames in multiples of 64:
    32x32 frames pass the generator (5 blocks, full size) but not the detector."""
    from monkeyanim.errors import InputError

    data = get_preset("shapes").to_dict()
    data["kp_detector"]["scale_factor"] = 0.5
    model = build_model(ModelConfig.from_dict(data), with_discriminator=False).eval()
    assert model.keypoints(torch.rand(1, 3, 64, 64)).mean.shape == (1, model.config.num_kp, 2)
    for size in (32, 96):
        with pytest.raises(InputError, match=rf"frames of {size}x{size} cannot go through this "
                                             rf"model \(kp_detector: a frame side of {size} px"):
            model.keypoints(torch.rand(1, 3, size, size))
    # frames as read from a video (uint8, 0..255) would pass silently as 255 times too bright
    for frames, got in ((torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "torch.uint8"),
                        (np.zeros((1, 3, 64, 64), np.float32), "ndarray")):
        with pytest.raises(InputError, match=f"must be a float tensor in \\[0, 1\\], got {got}"):
            model.keypoints(frames)


def test_a_frame_that_is_a_multiple_of_every_hourglass_step_runs():
    """The check refuses no more than it must: 96x64 is a multiple of 32 both ways."""
    model = build_model(ModelConfig.from_dict({**get_preset("shapes").to_dict(),
                                               "frame_size": [96, 64]})).eval()
    frames = torch.rand(1, 3, 96, 64)
    kp = model.kp_detector(frames)
    with torch.no_grad():
        assert model.generator(frames, kp, kp).frames.shape == (1, 3, 96, 64)


@pytest.mark.parametrize("mode", ["nearest", "trilinear"])
def test_aligned_flow_keeps_an_identity_flow_computed_at_half_size_in_place(mode):
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (B, C, H, W)
    identity = make_coordinate_grid(16, 16, image)[None]  # (1, 16, 16, 2), as at scale 0.5
    errors = {}
    for align in (False, True):
        config = GeneratorConfig(block_expansion=8, max_features=16, num_blocks=2,
                                 interpolation_mode=mode, align_flow=align)
        generator = Generator(config, num_kp=2, num_channels=3, kp_variance="matrix")
        errors[align] = float((generator._warp_features(image, identity) - image).abs().mean())
    assert errors[True] < 1e-5
    assert errors[False] > 0.03  # the authors' resize samples up to half a pixel off


def test_aligned_flow_is_saved_with_the_model(tmp_path):
    config = ModelConfig.from_dict({**get_preset("taichi").to_dict(), "frame_size": (32, 32)})
    config.generator.align_flow = True
    model = build_model(config)
    save_checkpoint(model, tmp_path / "aligned.safetensors")
    assert load_checkpoint(tmp_path / "aligned.safetensors").config.generator.align_flow


BAD_TRAINING = [  # a YAML line under `preset: shapes`, and what the error names
    ("train: {augmentation: {resize_ratio: [1.2, 0.8]}}", "augmentation.resize_ratio must be"),
    ("train: {augmentation: {resize_ratio: [0.9]}}", "augmentation.resize_ratio must be"),
    ("train: {augmentation: {hue: -3}}", "augmentation.hue must be in [0, 1]"),
    ("train: {augmentation: 5}", "augmentation must be a mapping of its settings"),
    ("train: {adam_betas: [0.5, 2]}", "adam_betas must be two numbers in [0, 1)"),
    ("train: {adam_betas: 0.5}", "adam_betas must be two numbers"),
    ("train: {epoch_milestones: [abc]}", "epoch_milestones must be a list of epochs"),
    ("train: {feature_matching: [1, 1, 1, 1, abc]}", "feature_matching must be a list"),
    ("train: {reconstruction_deformed: -1}", "reconstruction_deformed must be a weight >= 0"),
    ('train: {detach_kp_generator: "no"}', "detach_kp_generator must be true or false"),
    ("train: {trainable: generator.blend_mask}", "trainable must be a list of parameter names"),
    ("model: {kp_detector: {temperature: -1}}", "kp_detector.temperature must be positive"),
    ("model: {frame_size: 128}", "frame_size must be [height, width], not 128"),
    ('model: {generator: {blend_source: "no"}}', "generator.blend_source must be true or false"),
    ('model: {generator: {kp_embedding: {use_heatmap: "no"}}}',
     "generator.kp_embedding.use_heatmap must be true or false"),
    ("train: {generator_gan: .inf}", "generator_gan must be a weight >= 0"),
    ("train: [1, 2]", "train must be a mapping of settings, not list"),
    ("model: [1, 2]", "model must be a mapping of settings, not list"),
    ("train: {seed: 1e20}", "seed must be at most 4294967295"),
]


@pytest.mark.parametrize("line, message", BAD_TRAINING, ids=[m for _, m in BAD_TRAINING])
def test_training_settings_of_the_wrong_kind_are_refused_by_name(line, message, tmp_path):
    """Each was a traceback deep in training, or taken silently (a string as a bool)."""
    from monkeyanim.trainconfig import load_train_config

    path = tmp_path / "bad.yaml"
    path.write_text(f"preset: shapes\n{line}\n")
    with pytest.raises(ConfigError) as error:
        load_train_config(str(path))
    assert message in str(error.value)


def test_an_init_mismatch_names_the_settings_that_shape_weights():
    """The message listed the first four differences (frame size, temperature, ...: settings
    a run may change) and hid the one that refused the weights."""
    from monkeyanim.config import ModelConfig
    from monkeyanim.finetune import differences, shaping_settings

    start = get_preset("shapes")
    changed = start.to_dict()
    changed.update(kp_variance="single", frame_size=[128, 128])
    changed["kp_detector"].update(temperature=0.05, clip_variance=0.001)
    changed["generator"]["block_expansion"] = 8
    assert shaping_settings(start, ModelConfig.from_dict(changed)) == [
        "generator.block_expansion"]
    # a part turned off (its settings gone: a KeyError) or on is named as one setting
    off = start.to_dict()
    off["generator"]["kp_embedding"] = None
    off = ModelConfig.from_dict(off)
    assert shaping_settings(start, off) == shaping_settings(off, start) == [
        "generator.kp_embedding"]
    assert differences(start, off, ("the checkpoint", "the run")) == \
        "generator.kp_embedding: on in the checkpoint, off in the run"


def test_a_preset_named_by_other_than_a_word_is_refused(tmp_path):
    """`preset: [1]` was a TypeError (unhashable list)."""
    from monkeyanim.trainconfig import load_train_config

    path = tmp_path / "bad.yaml"
    path.write_text("preset: [1]\n")
    with pytest.raises(ConfigError, match=r"unknown preset \[1\]"):
        load_train_config(str(path))


def test_feature_matching_needs_one_weight_per_discriminator_map():
    from monkeyanim.trainconfig import check_feature_matching, train_preset

    model, train = train_preset("shapes")  # 4 blocks: the input and 4 block maps
    check_feature_matching(train, model)
    with pytest.raises(ConfigError, match="feature_matching has 2 weights but the "
                                          "discriminator gives 5 feature maps"):
        check_feature_matching(dataclasses.replace(train, feature_matching=[1, 2]), model)


def test_whole_numbers_may_be_written_with_an_exponent(tmp_path):
    """iterations: 1e5 (YAML reads it as 100000.0) is a whole number; 8.5 batches are not."""
    from monkeyanim.trainconfig import load_train_config

    path = tmp_path / "run.yaml"
    path.write_text("preset: shapes\nmodel: {num_kp: 1.0e1, frame_size: [6.4e1, 6.4e1]}\n"
                    "train: {iterations: 1e5, lr: 2e-4, epoch_milestones: [6e1, 9e1]}\n")
    model, train = load_train_config(str(path))
    assert (model.num_kp, train.iterations, train.lr) == (10, 100_000, 2e-4)
    assert type(train.iterations) is int and type(model.num_kp) is int
    assert model.frame_size == (64, 64) and train.epoch_milestones == [60, 90]
    assert all(type(n) is int for n in (*model.frame_size, *train.epoch_milestones))
    path.write_text("preset: shapes\ntrain: {batch_size: 8.5}\n")
    with pytest.raises(ConfigError, match="batch_size must be a whole number of at least 1, "
                                          "not 8.5"):
        load_train_config(str(path))
