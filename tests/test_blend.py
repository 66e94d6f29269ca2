"""The blend head (``generator.blend_source``) and training only some parameters
(``train.trainable``): the way a head is added to weights trained without it."""

import dataclasses
import json

import cv2
import torch

from monkeyanim.checkpoint import load_checkpoint, save_checkpoint
from monkeyanim.config import ModelConfig
from monkeyanim.models import Keypoints, build_model

from conftest import TINY, assert_one_line_error, run_cli, run_ddp_worker

GENERATOR = "  generator:\n    block_expansion: 8\n"
BLEND = TINY.replace(GENERATOR, GENERATOR + "    blend_source: true\n").replace(
    "train: {", "train: {trainable: [generator.blend_mask], lr: 0.01, ")


def blend_config() -> ModelConfig:
    config = ModelConfig()
    config.generator = dataclasses.replace(config.generator, block_expansion=8, max_features=32,
                                           blend_source=True)
    config.generator.dense_motion.block_expansion = 8
    config.generator.dense_motion.max_features = 32
    return config


def generate(model, source, kp_source, kp_driving):
    with torch.inference_mode():
        return model.generator(source, kp_source, kp_driving)


def test_blend_weights_the_warped_source_against_the_decoder(tmp_path):
    torch.manual_seed(0)
    model = build_model(blend_config(), with_discriminator=False).eval()
    plain = build_model(dataclasses.replace(model.config, generator=dataclasses.replace(
        model.config.generator, blend_source=False)), with_discriminator=False).eval()
    assert plain.load_state_dict(model.state_dict(), strict=False).unexpected_keys == [
        "generator.blend_mask.weight", "generator.blend_mask.bias"]
    source = torch.rand(2, 3, 64, 64)
    kp_source = Keypoints(torch.rand(2, 10, 2) * 2 - 1, torch.eye(2).repeat(2, 10, 1, 1) * 0.01)
    kp_driving = Keypoints(kp_source.mean + 0.1, kp_source.covar)
    decoded = generate(plain, source, kp_source, kp_driving).frames
    out = generate(model, source, kp_source, kp_driving)
    # a fresh head weighs the two evenly
    assert torch.allclose(out.blend, torch.full_like(out.blend, 0.5))
    assert torch.allclose(out.frames, (out.deformed + decoded) / 2, atol=1e-6)
    assert (out.deformed - decoded).abs().mean() > 0.05  # the two differ: the test can fail
    for bias, expected in ((30.0, out.deformed), (-30.0, decoded)):
        model.generator.blend_mask.bias.data.fill_(bias)
        assert torch.allclose(generate(model, source, kp_source, kp_driving).frames, expected,
                              atol=1e-6)
    assert plain.generator.blend_mask is None
    assert generate(plain, source, kp_source, kp_driving).blend is None
    # the setting and the head's weights travel in the checkpoint
    save_checkpoint(model, tmp_path / "blend.safetensors")
    loaded = load_checkpoint(tmp_path / "blend.safetensors")
    assert loaded.config.generator.blend_source
    assert torch.equal(loaded.generator.blend_mask.bias, model.generator.blend_mask.bias)


def test_training_only_the_head_leaves_the_rest_as_it_was(shapes_slice, tiny_config, tmp_path):
    """--init from a run without the head, with train.trainable: only the head's weights move;
    every other weight and batch-norm statistic stays, and the discriminator takes no step."""
    first = tmp_path / "first"
    result = run_cli("train", shapes_slice, "-o", first, "--config", tiny_config,
                     "--iterations", "2", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    config = tmp_path / "blend.yaml"
    config.write_text(BLEND)
    run = tmp_path / "blend"
    result = run_cli("train", shapes_slice, "-o", run, "--config", config, "--init",
                     first / "model.safetensors", "--iterations", "3",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    start = load_checkpoint(first / "model.safetensors").state_dict()
    tuned = load_checkpoint(run / "model.safetensors").state_dict()
    head = {k for k in tuned if k.startswith("generator.blend_mask.")}
    assert head == {"generator.blend_mask.weight", "generator.blend_mask.bias"}
    assert set(tuned) - head == set(start)
    changed = [k for k in start if not torch.equal(start[k], tuned[k])]
    assert changed == [], changed[:4]
    assert tuned["generator.blend_mask.weight"].abs().max() > 1e-3  # zero at the start
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3] and "disc_gan" not in log[-1]
    # the samples show the blend weight beside the deformed source: 5 columns of 64 px
    sample = cv2.imread(str(run / "samples" / "0000003.png"))
    assert sample.shape[:2] == (4 * 64, 5 * 64)
    # resuming trains the same parameters; resuming with another selection is refused
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", "4",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == 4
    saved = json.loads((run / "config.json").read_text())
    saved["train"]["trainable"] = None
    (run / "config.json").write_text(json.dumps(saved))
    assert_one_line_error(run_cli("train", shapes_slice, "-o", run, "--resume",
                                  "--iterations", "5"), "resume with the run's own config")


def test_unknown_trainable_name_is_one_line(shapes_slice, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(BLEND.replace("generator.blend_mask", "generator.blend_mak"))
    result = run_cli("train", shapes_slice, "-o", tmp_path / "run", "--config", config)
    assert_one_line_error(result, "train.trainable", "generator.blend_mak")
    assert not (tmp_path / "run" / "state.pt").exists()


def test_ddp_trains_only_the_head_on_both_ranks(shapes_slice, tmp_path):
    """DDP refuses to wrap a network with nothing to train: the fixed ones go unwrapped."""
    run, config = tmp_path / "ddp", tmp_path / "ddp.yaml"
    config.write_text(BLEND.replace("iterations: 40", "iterations: 2"))
    rank0, rank1 = run_ddp_worker(shapes_slice, run, config)
    assert all(torch.equal(value, rank1[key]) for key, value in rank0.items())
    assert rank0["generator.blend_mask.weight"].abs().max() > 1e-3
