"""The bundled checkpoint: registry, sha256, packaging, and that it really animates."""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import monkeyanim
from monkeyanim import hub
from monkeyanim.data import PairDataset

from conftest import ROOT, assert_one_line_error, run_cli

SHAPES_BAR_L1 = 0.012  # half the static-source baseline of the shapes test split (0.024)
ACTIONS_BAR_L1 = 0.015  # half the static-source baseline of the actions test split (0.031)
MGIF_BAR_L1 = 0.0258  # half the static-source baseline of the MGif test split (0.0516)


def test_registry_loads_and_verifies(monkeypatch):
    model = monkeyanim.load_model("shapes")
    assert model.config.num_kp == 4 and model.provenance["name"] == "shapes"
    assert "shapes" in monkeyanim.available_models()
    entry = hub._MODELS["shapes"]
    monkeypatch.setitem(hub._MODELS, "shapes", hub.RegistryEntry(entry.file, "0" * 64, ""))
    with pytest.raises(monkeyanim.CheckpointError, match="does not match the sha256"):
        monkeyanim.load_model("shapes")
    # `monkeyanim checkpoints` still lists the others, and says what is wrong with this one
    from monkeyanim.cli_checkpoints import _bundled_row

    row = _bundled_row("shapes")
    assert row[0] == "shapes" and row[1] == "-" and row[-1] == "yes"
    assert row[6].startswith("unusable: ") and "does not match the sha256" in row[6]
    from typer.testing import CliRunner

    from monkeyanim.cli import app

    listed = CliRunner().invoke(app, ["checkpoints"])  # in this process: the registry patched
    assert listed.exit_code == 1 and "unusable: " in listed.output
    assert "\nactions\t9.2 MB" in listed.output  # the others still listed
    assert _bundled_row("actions")[1] == "9.2 MB"
    with pytest.raises(monkeyanim.CheckpointError, match="registered: actions, mgif, shapes"):
        hub.registry_entry("shape")
    # the predictors that ship beside them are verified the same way
    assert hub.predictor_path("actions").name == "actions-predictor.safetensors"
    monkeypatch.undo()  # the checkpoints as they ship, but this predictor
    entry = hub._PREDICTORS["actions"]
    monkeypatch.setitem(hub._PREDICTORS, "actions", hub.RegistryEntry(entry.file, "0" * 64, ""))
    with pytest.raises(monkeyanim.CheckpointError, match="sha256 registered for the predictor"):
        hub.predictor_path("actions")
    listed = CliRunner().invoke(app, ["checkpoints"])  # an unusable predictor fails it too
    assert listed.exit_code == 1 and "unusable: " in listed.output, listed.output


def test_unknown_name_lists_the_valid_ones(tmp_path):
    result = run_cli("animate", ROOT / "examples/shapes/source.png",
                     ROOT / "examples/shapes/driving.mp4", "-o", tmp_path / "o.mp4", "-c", "shape")
    assert_one_line_error(result, "unknown checkpoint 'shape'", "shapes")


def test_checkpoints_command_lists_them():
    result = run_cli("checkpoints")
    assert result.returncode == 0, result.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert rows["shapes"][1:3] == ["6.3 MB", "64x64"]  # no TTY: tab-separated
    assert rows["actions"][1:5] == ["9.2 MB", "64x64", "10250", "0.0126 (0.0308)"]
    assert Path(rows["actions"][6]).is_file()
    # the shipped image-to-video predictor's held-out keypoint L1 (keypoints kept still)
    assert rows["shapes"][7] == "0.1823 (0.5378)" and rows["mgif"][7] == "-"
    # the name column is what --checkpoint takes; the default is said in a column of its own
    assert [name for name, row in rows.items() if row[-1] == "yes"] == ["shapes"]
    assert rows["name"][-1] == "default" and all(len(row) == 9 for row in rows.values())


def test_checkpoints_on_a_narrow_terminal(monkeypatch):
    """On an 80-column terminal the eight-column table cut every value short ("shapes
    (defau…"): a block per checkpoint there, the table on wider ones."""
    from rich.console import Console

    from monkeyanim import cli_checkpoints

    for width, expected in ((80, "  iterations: 500\n"), (160, "│ shapes (default) │")):
        shown = Console(force_terminal=True, width=width, record=True, color_system=None)
        monkeypatch.setattr(cli_checkpoints, "console", shown)
        cli_checkpoints.checkpoints()
        text = shown.export_text()
        assert expected in text and "…" not in text, text


def mean_reconstruction_l1(name: str, folder: Path, every: int) -> float:
    """The paper's reconstruction (first frame animated to every frame's keypoints), mean L1
    over every ``every``-th test video, all frames."""
    model = monkeyanim.load_model(name)
    test = PairDataset(folder, model.config.frame_size)
    errors = []
    for index in range(0, len(test.videos), every):
        frames = torch.from_numpy(test.frames(index)).permute(0, 3, 1, 2).float() / 255
        kp = model.keypoints(frames)
        errors.append((model.generate(frames[0], kp[:1], kp).frames - frames).abs().mean().item())
    return float(np.mean(errors))


def test_shapes_meets_its_bar_on_test_videos(datasets_dir):
    assert mean_reconstruction_l1("shapes", datasets_dir / "shapes" / "test", 100) <= SHAPES_BAR_L1


def test_actions_meets_its_bar_on_test_videos(datasets_dir):
    """5 of the 15 test videos (the model card's 0.0126 is over all 15)."""
    assert mean_reconstruction_l1("actions", datasets_dir / "actions" / "test", 3) <= ACTIONS_BAR_L1


def test_mgif_meets_its_bar_on_test_videos(datasets_dir):
    """All 100 test videos (about 4 minutes on one core): every tenth alone scores 0.031, so
    a subset would not say whether the whole split meets the bar."""
    assert mean_reconstruction_l1("mgif", datasets_dir / "mgif" / "test", 1) <= MGIF_BAR_L1


def test_mgif_animates_with_absolute_keypoints_by_default():
    model = monkeyanim.load_model("mgif")
    assert model.config.frame_size == (64, 64) and model.discriminator is None
    assert model.provenance["default_mode"] == "absolute" and not model.provenance["face_model"]


def test_actions_is_stored_in_half_precision_and_loads_in_float32():
    path = hub.bundled_path("actions")
    assert path.stat().st_size < 10e6  # float16 on disk
    model = monkeyanim.load_model("actions")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.provenance["default_mode"] == "relative" and not model.provenance["face_model"]


def centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(frame.max(axis=2) > 60)
    return np.array([xs.mean(), ys.mean()])


def test_readme_example_moves_the_square_like_the_disc(tmp_path):
    """The README's first command: the source square follows the driving disc's motion."""
    out = tmp_path / "result.mp4"
    result = run_cli("animate", ROOT / "examples/shapes/source.png",
                     ROOT / "examples/shapes/driving.mp4", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "default checkpoint 'shapes' (--checkpoint to choose another: actions, mgif, a file " \
           "or hf://)" in result.stderr
    import av
    with av.open(str(out)) as container:
        made = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(ROOT / "examples/shapes/driving.mp4")) as container:
        drive = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(made) == len(drive) == 32
    for t in (8, 16, 24):
        moved = centroid(made[t]) - centroid(made[0])
        expected = centroid(drive[t]) - centroid(drive[0])
        assert np.linalg.norm(moved - expected) < 4, (t, moved, expected)
    assert np.linalg.norm(centroid(drive[16]) - centroid(drive[0])) > 20  # it really moves


def test_wheel_ships_every_registered_checkpoint(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                             str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    wheel = next(Path(tmp_path).glob("monkeyanim-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for entry in [*hub._MODELS.values(), *hub._PREDICTORS.values()]:
        assert f"monkeyanim/checkpoints/{entry.file}" in names
    assert "monkeyanim/models/generator.py" in names
