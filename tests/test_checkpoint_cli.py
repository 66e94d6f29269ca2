"""The checkpoint format and the `convert` command, including every way it should refuse."""

import json

import pytest
import torch
from safetensors import safe_open

import monkeyanim
from monkeyanim.checkpoint import save_checkpoint
from monkeyanim.errors import CheckpointError
from monkeyanim.models import build_model
from monkeyanim.presets import get_preset

from conftest import ROOT, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def authors_ckpt(fixture_dir):
    return fixture_dir / "taichi-small.pth.tar"


@pytest.fixture(scope="module")
def small_config(fixture_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "taichi-small.json"
    path.write_text((fixture_dir / "taichi-small.model_params.json").read_text())
    return path


def test_checkpoint_is_self_describing_and_strict(tmp_path):
    model = build_model(get_preset("shapes"), provenance={"name": "shapes", "iterations": 7,
                                                         "metrics": {"l1": 0.01}})
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, with_discriminator=False)
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
        assert not any(k.startswith("discriminator.") for k in handle.keys())
    assert json.loads(meta["config"])["num_kp"] == 4
    assert json.loads(meta["provenance"])["metrics"] == {"l1": 0.01}
    loaded = monkeyanim.load_model(path)
    assert loaded.discriminator is None and not loaded.training
    assert loaded.provenance["iterations"] == 7
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away


def test_half_storage_halves_the_file_and_loads_as_float32(tmp_path):
    model = build_model(get_preset("shapes"))
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    save_checkpoint(model, full, with_discriminator=False)
    save_checkpoint(model, half, with_discriminator=False, half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = monkeyanim.load_model(half)
    for key, value in loaded.state_dict().items():
        original = model.state_dict()[key]
        assert value.dtype == original.dtype, key  # counters stay integers, weights float32
        assert torch.allclose(value, original, rtol=1e-3, atol=1e-4), key


def test_corrupt_and_foreign_safetensors_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(build_model(get_preset("shapes")), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        monkeyanim.load_model(path)
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a monkeyanim checkpoint"):
        monkeyanim.load_model(path)


def test_convert_refuses_to_overwrite_and_keeps_the_file(authors_ckpt, small_config, tmp_path):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"precious")
    result = run_cli("convert", authors_ckpt, "--config", small_config, "-o", out)
    assert_one_line_error(result, "already exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    result = run_cli("convert", authors_ckpt, "--config", small_config, "-o", out, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert monkeyanim.load_model(out).config.num_kp == 10
    with pytest.raises(monkeyanim.OutputError, match="cannot write .*Not a directory"):
        monkeyanim.save_checkpoint(monkeyanim.load_model(out), out / "inside-a-file.safetensors")
    before = authors_ckpt.read_bytes()  # the input itself is never the output, --overwrite or not
    result = run_cli("convert", authors_ckpt, "--config", small_config, "-o", authors_ckpt,
                     "--overwrite")
    assert_one_line_error(result, "is the input", "name another file")
    assert authors_ckpt.read_bytes() == before
    config_before = small_config.read_bytes()  # nor is the config file read with it
    result = run_cli("convert", authors_ckpt, "--config", small_config, "-o", small_config,
                     "--overwrite")
    assert_one_line_error(result, "is the input", "name another file")
    assert small_config.read_bytes() == config_before
    result = run_cli("convert", authors_ckpt, "--config", small_config, "-o",
                     tmp_path / "out.pth.tar")  # what --checkpoint would read as the authors'
    assert_one_line_error(result, "must end in .safetensors")
    out.write_bytes(b"precious")  # a disk that fills up (a file-size limit) keeps the old file
    result = run_cli("convert", authors_ckpt, "--config", small_config, "-o", out, "--overwrite",
                     max_file_bytes=100_000)
    assert_one_line_error(result, f"cannot write {out}", "File too large")
    assert out.read_bytes() == b"precious" and sorted(tmp_path.iterdir()) == [out]


def test_convert_takes_the_authors_yaml_and_train_refuses_it(authors_ckpt, small_config,
                                                               tmp_path):
    """`convert --config their.yaml` gives the same model as their model_params in JSON;
    `train --config their.yaml` says it takes its own files, and where theirs go."""
    import yaml

    published = {"dataset_params": {"image_shape": [64, 64, 3]},
                 "model_params": json.loads(small_config.read_text())}
    config = tmp_path / "taichi-small.yaml"
    config.write_text(yaml.safe_dump(published))
    outputs = [tmp_path / "from-yaml.safetensors", tmp_path / "from-json.safetensors"]
    for spec, out in zip((config, small_config), outputs):
        result = run_cli("convert", authors_ckpt, "--config", spec, "-o", out)
        assert result.returncode == 0, result.stderr
    yaml_model, json_model = map(monkeyanim.load_model, outputs)
    assert yaml_model.config == json_model.config
    assert all(torch.equal(a, b) for a, b in zip(yaml_model.state_dict().values(),
                                                 json_model.state_dict().values()))
    result = run_cli("train", tmp_path, "-o", tmp_path / "run", "--config", config)
    assert_one_line_error(result, "is an authors' config", "monkeyanim convert")


@pytest.mark.parametrize("case", ["missing", "unknown-config", "mismatch", "corrupt", "not-dict",
                                  "image", "out-dir"])
def test_convert_errors_are_one_line(case, authors_ckpt, small_config, tmp_path):
    ckpt, config, out = authors_ckpt, str(small_config), tmp_path / "out.safetensors"
    expect = []
    if case == "missing":
        ckpt, expect = tmp_path / "nope.pth.tar", ["not found", "nope.pth.tar"]
    elif case == "unknown-config":
        config, expect = "tachi", ["unknown config", "taichi", "moving-gif"]
    elif case == "mismatch":
        config, expect = "taichi", ["does not match", "wrong shape"]
    elif case == "corrupt":
        ckpt = tmp_path / "broken.pth.tar"
        ckpt.write_bytes(authors_ckpt.read_bytes()[:5000])
        expect = ["cannot read", "broken.pth.tar"]
    elif case == "image":  # the weights-only unpickler's reason, not torch's advice
        ckpt = tmp_path / "photo.pth.tar"
        ckpt.write_bytes((ROOT / "examples" / "shapes" / "source.png").read_bytes())
        expect = ["cannot read", "photo.pth.tar", "not a PyTorch file"]
    elif case == "not-dict":
        ckpt = tmp_path / "other.pth.tar"
        torch.save({"state_dict": {}}, ckpt)
        expect = ["not an authors' Monkey-Net checkpoint"]
    elif case == "out-dir":
        out, expect = tmp_path / "no" / "such" / "out.safetensors", ["does not exist"]
    result = run_cli("convert", ckpt, "--config", config, "-o", out)
    assert_one_line_error(result, *expect)
    assert "weights_only" not in result.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_missing_and_unexpected_keys_are_listed(authors_ckpt, small_config, tmp_path):
    raw = torch.load(authors_ckpt, weights_only=True)
    raw["generator"]["extra.weight"] = torch.zeros(1)
    del raw["kp_detector"]["predictor.decoder.conv.bias"]
    broken = tmp_path / "keys.pth.tar"
    torch.save(raw, broken)
    result = run_cli("convert", broken, "--config", small_config, "-o", tmp_path / "o.safetensors")
    assert_one_line_error(result, "missing 1: kp_detector.predictor.decoder.conv.bias",
                          "unexpected 1: generator.extra.weight")


def test_load_model_errors(authors_ckpt, tmp_path):
    with pytest.raises(monkeyanim.ConfigError, match="give its config"):
        monkeyanim.load_model(authors_ckpt)
    with pytest.raises(CheckpointError, match="unknown checkpoint 'no-such-model'"):
        monkeyanim.load_model("no-such-model")
    # a config given with a checkpoint that carries its own would be ignored: said instead
    with pytest.raises(monkeyanim.ConfigError, match="carries its own architecture"):
        monkeyanim.load_model("shapes", config="taichi")
    result = run_cli("animate", ROOT / "examples/shapes/source.png",
                     ROOT / "examples/shapes/driving.mp4", "-o", tmp_path / "o.mp4", "-c",
                     ROOT / "checkpoints/shapes.safetensors", "--config", "taichi")
    assert_one_line_error(result, "leave --config out")


def test_a_run_folder_or_its_state_points_to_the_weights(tmp_path):
    """`-c run` or `-c run/state.pt` (the optimisers, for --resume) name the file that holds
    the run's weights, with or without --config, instead of blaming an authors' format."""
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(build_model(get_preset("shapes"), with_discriminator=False),
                    run / "model.safetensors")
    torch.save({"iteration": 1}, run / "state.pt")
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint.*model.safetensors"):
        monkeyanim.load_model(run)
    # a registered name is the checkpoint even where a folder of that name is at hand (the
    # authors' datasets hold one named shapes)
    (tmp_path / "shapes").mkdir()
    result = run_cli("keypoints", ROOT / "examples/shapes/source.png", "-o", tmp_path / "k.png",
                     "-c", "shapes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "o.mp4"
    for extra in ((), ("--config", "shapes")):
        result = run_cli("animate", ROOT / "examples/shapes/source.png",
                         ROOT / "examples/shapes/driving.mp4", "-o", out, "-c", run / "state.pt",
                         *extra)
        assert_one_line_error(result, "optimiser state, for --resume",
                              f"weights are {run / 'model.safetensors'}")
    assert not out.exists()


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("convert", "train", "animate", "reconstruct", "keypoints"):
        assert command in result.stdout
    # each command's summary is one line, which --help's list shows as it is written
    import typer.main

    from monkeyanim.cli import app

    for name, command in typer.main.get_command(app).commands.items():
        summary = command.help.strip().split("\n\n")[0]
        assert "\n" not in summary and len(summary) <= 90, (name, summary)
    # every option says what it does, and train's --config names every preset it takes
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, (name, param.name)
    from monkeyanim.trainconfig import TRAIN_PRESETS

    config = next(p for p in typer.main.get_command(app).commands["train"].params
                  if p.name == "config")
    assert all(preset in config.help for preset in TRAIN_PRESETS), config.help
