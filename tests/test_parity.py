"""The acceptance test of the core: the authors' checkpoint converted reproduces their outputs."""

import json

import numpy as np
import pytest
import torch

import monkeyanim
from monkeyanim.checkpoint import convert_authors_checkpoint
from monkeyanim.config import ModelConfig
from monkeyanim.pipeline import relative_keypoints

from conftest import run_cli

PARITY_TOL = 1e-4


@pytest.fixture(scope="module")
def fixture_config(fixture_dir) -> ModelConfig:
    params = json.loads((fixture_dir / "taichi-small.model_params.json").read_text())
    return ModelConfig.from_authors({"model_params": params})


@pytest.fixture(scope="module")
def arrays(fixture_dir):
    data = np.load(fixture_dir / "taichi-small.npz")
    return {key: torch.from_numpy(data[key]) for key in data.files}


def frames(video: torch.Tensor) -> torch.Tensor:
    return video[0].permute(1, 0, 2, 3)  # authors' (1, C, T, H, W) -> (T, C, H, W)


def assert_parity(model, arrays):
    drive, source = frames(arrays["driving_video"]), frames(arrays["source_image"])
    kp_driving, kp_source = model.keypoints(drive), model.keypoints(source)
    expected = {
        "kp_driving_mean": kp_driving.mean, "kp_driving_var": kp_driving.covar,
        "kp_source_mean": kp_source.mean, "kp_source_var": kp_source.covar,
    }
    kp_transfer = relative_keypoints(kp_source, kp_driving, kp_driving[:1])
    expected["kp_transfer_mean"] = kp_transfer.mean
    rec = model.generate(drive[0], kp_driving[:1], kp_driving)
    transfer = model.generate(source[0], kp_source, kp_transfer)
    expected["reconstruction_video_prediction"] = rec.frames
    expected["reconstruction_video_deformed"] = rec.deformed
    expected["transfer_relative_video_prediction"] = transfer.frames
    expected["transfer_relative_video_deformed"] = transfer.deformed
    with torch.inference_mode():
        maps = model.discriminator(drive[1:2], kp_driving[1:2], kp_driving[0:1])
    for i, feature in enumerate(maps):
        expected[f"discriminator_feature_{i}"] = feature
    checked = 0
    for key, ours in expected.items():
        theirs = arrays[key]
        theirs = theirs[0] if key.startswith("kp_") else theirs
        if theirs.ndim == 5:  # (1, C, T, H, W)
            theirs = frames(theirs)
        assert ours.shape == theirs.shape, key
        diff = (ours.cpu() - theirs).abs().max().item()
        assert diff <= PARITY_TOL, f"{key}: max abs diff {diff:.2e}"
        checked += 1
    assert checked == len(arrays) - 2  # every output array (all but the two inputs)


def test_converted_checkpoint_matches_authors_outputs(fixture_dir, fixture_config, arrays):
    model = convert_authors_checkpoint(fixture_dir / "taichi-small.pth.tar", fixture_config)
    assert_parity(model, arrays)


def test_parity_survives_cli_conversion_and_reload(fixture_dir, arrays, tmp_path):
    config_file = tmp_path / "small.json"
    config_file.write_text((fixture_dir / "taichi-small.model_params.json").read_text())
    out = tmp_path / "small.safetensors"
    result = run_cli("convert", fixture_dir / "taichi-small.pth.tar", "--config", config_file,
                     "-o", out, "--name", "taichi-small")
    assert result.returncode == 0, result.stderr
    assert out.is_file() and "wrote" in result.stdout
    model = monkeyanim.load_model(out)
    assert model.provenance["name"] == "taichi-small"
    assert model.config.frame_size == (64, 64)
    assert_parity(model, arrays)
    # the same file also loads through the authors' path of load_model
    direct = monkeyanim.load_model(fixture_dir / "taichi-small.pth.tar", config=config_file)
    for (key, a), b in zip(model.state_dict().items(), direct.state_dict().values()):
        assert torch.equal(a, b), key


def test_batching_does_not_change_frames(fixture_dir, fixture_config, arrays):
    """Frames are independent: generating one at a time equals generating all at once."""
    model = convert_authors_checkpoint(fixture_dir / "taichi-small.pth.tar", fixture_config)
    drive = frames(arrays["driving_video"])
    kp = model.keypoints(drive)
    together = model.generate(drive[0], kp[:1], kp).frames
    alone = torch.cat([model.generate(drive[0], kp[:1], kp[i:i + 1]).frames for i in range(len(kp))])
    assert (together - alone).abs().max().item() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_follows_to_cuda(fixture_dir, fixture_config, arrays):
    model = convert_authors_checkpoint(fixture_dir / "taichi-small.pth.tar", fixture_config)
    model = model.to("cuda")
    assert_parity(model, arrays)
