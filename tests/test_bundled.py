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


def test_registry_loads_and_verifies(monkeypatch):
    model = monkeyanim.load_model("shapes")
    assert model.config.num_kp == 4 and model.provenance["name"] == "shapes"
    assert "shapes" in monkeyanim.available_models()
    entry = hub._MODELS["shapes"]
    monkeypatch.setitem(hub._MODELS, "shapes", hub.RegistryEntry(entry.file, "0" * 64, ""))
    with pytest.raises(monkeyanim.CheckpointError, match="does not match the sha256"):
        monkeyanim.load_model("shapes")


def test_unknown_name_lists_the_valid_ones(tmp_path):
    result = run_cli("animate", ROOT / "examples/shapes/source.png",
                     ROOT / "examples/shapes/driving.mp4", "-o", tmp_path / "o.mp4", "-c", "shape")
    assert_one_line_error(result, "unknown checkpoint 'shape'", "shapes")


def test_checkpoints_command_lists_it():
    result = run_cli("checkpoints")
    assert result.returncode == 0 and "shapes" in result.stdout and "12.6 MB" in result.stdout


def test_meets_its_bar_on_test_videos(datasets_dir):
    """Reconstruction L1 on 16 test videos of the shapes split (every 100th), all frames."""
    model = monkeyanim.load_model("shapes")
    test = PairDataset(datasets_dir / "shapes" / "test", (64, 64))
    errors = []
    for index in range(0, len(test.videos), 100):
        frames = torch.from_numpy(test.frames(index)).permute(0, 3, 1, 2).float() / 255
        kp = model.keypoints(frames)
        errors.append((model.generate(frames[0], kp[:1], kp).frames - frames).abs().mean().item())
    assert np.mean(errors) <= SHAPES_BAR_L1


def centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(frame.max(axis=2) > 60)
    return np.array([xs.mean(), ys.mean()])


def test_readme_example_moves_the_square_like_the_disc(tmp_path):
    """The README's first command: the source square follows the driving disc's motion."""
    out = tmp_path / "result.mp4"
    result = run_cli("animate", ROOT / "examples/shapes/source.png",
                     ROOT / "examples/shapes/driving.mp4", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "default checkpoint 'shapes'" in result.stderr
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


def test_wheel_ships_the_checkpoint(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                             str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    wheel = next(Path(tmp_path).glob("monkeyanim-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "monkeyanim/checkpoints/shapes.safetensors" in names
    assert "monkeyanim/models/generator.py" in names
