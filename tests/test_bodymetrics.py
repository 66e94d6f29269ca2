"""AKD / MKR for bodies: the scoring rules always; mediapipe's pose model on real Tai-Chi frames
when the `body` extra is installed (it is not in the test extra: it pulls jax and an OpenCV 5
contrib wheel that would replace opencv-python's cv2)."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import monkeyanim
from monkeyanim.bodymetrics import BodyScores, unavailable_reason
from monkeyanim.checkpoint import save_checkpoint
from monkeyanim.evaluation import external_metrics
from monkeyanim.video import open_video

from conftest import run_cli, write_video

HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None


def pose(visible: int, shift=(0.0, 0.0)) -> np.ndarray:
    """33 landmarks on a line, the first ``visible`` of them visible: (33, 3)."""
    points = np.zeros((33, 3))
    points[:, 0] = np.arange(33) * 2 + shift[0]
    points[:, 1] = 10 + shift[1]
    points[:visible, 2] = 0.9
    points[visible:, 2] = 0.1
    return points


def test_akd_counts_shared_landmarks_and_mkr_the_lost_ones():
    scores = BodyScores()
    scores.add(pose(33), pose(20, shift=(3, 4)))  # 20 kept 5 px away, 13 lost
    scores.add(None, pose(33))  # no body in the real frame: not counted
    scores.add(pose(10), None)  # body lost entirely: 10 more missing
    result = scores.result()
    assert result["akd"] == pytest.approx(5.0)
    assert result["mkr"] == pytest.approx(23 / 43)
    assert isinstance(BodyScores().result()["akd"], str)
    lost = BodyScores()
    lost.add(pose(5), None)
    assert lost.result()["mkr"] == 1.0 and "generated" in lost.result()["akd"]


def test_body_models_get_the_pose_detector_or_the_reason(small_model):
    model = monkeyanim.load_model(small_model)
    model.provenance["body_model"] = True
    detector, scores, unavailable = external_metrics(model)
    if HAS_MEDIAPIPE:
        assert detector.name == "mediapipe-pose-33" and set(unavailable) == {"aed"}
    else:
        assert detector is None and "monkeyanim[body]" in unavailable["akd"]
        assert unavailable_reason() == unavailable["mkr"]
    model.provenance["body_model"] = False
    assert "no keypoint detector" in external_metrics(model)[2]["akd"]


def taichi_frames(datasets_dir, count=3, step=40):
    """Top halves (the video; the bottom is a segmentation overlay), (256, 256, 3) uint8."""
    frames = []
    for index, frame in enumerate(open_video(datasets_dir / "taichi" / "copart-0.mp4").frames()):
        if index % step == 0:
            frames.append(np.ascontiguousarray(frame[:256]))
        if len(frames) == count:
            return frames


@pytest.mark.skipif(not HAS_MEDIAPIPE, reason="the body extra (mediapipe 0.10.14) is not installed")
def test_mediapipe_finds_the_body_and_scores_motion(datasets_dir):
    from monkeyanim.bodymetrics import MediapipeBody

    body, frames = MediapipeBody(), taichi_frames(datasets_dir)
    found = [body(frame) for frame in frames]
    assert all(f is not None and (f[:, 2] > 0.5).sum() >= 15 for f in found)
    same, moved = BodyScores(), BodyScores()
    same.add(found[0], body(frames[0].copy()))
    moved.add(found[0], found[2])
    assert same.result()["akd"] < 0.5 < moved.result()["akd"]
    assert body(np.full((256, 256, 3), 127, np.uint8)) is None


@pytest.mark.skipif(not HAS_MEDIAPIPE, reason="the body extra (mediapipe 0.10.14) is not installed")
def test_evaluate_measures_body_models(small_model, datasets_dir, tmp_path):
    model = monkeyanim.load_model(small_model)
    checkpoint = tmp_path / "body.safetensors"
    save_checkpoint(model, checkpoint, provenance={"name": "small-body", "body_model": True})
    (tmp_path / "data" / "test").mkdir(parents=True)
    write_video(tmp_path / "data" / "test" / "taichi.mp4", taichi_frames(datasets_dir, 6, 10))
    result = run_cli("evaluate", tmp_path / "data", "-c", checkpoint, "--json", tmp_path / "e.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["detector"] == "mediapipe-pose-33" and 0 <= report["mkr"] <= 1
    assert "aed" in report["unavailable"]
    assert 0 < report["static_akd"] and report["static_mkr"] < 0.5  # the first frame repeated


def test_native_chatter_is_muted_around_mediapipe_calls():
    code = ("import os\nfrom monkeyanim.native import muted_stderr\nwith muted_stderr():\n"
            "    os.write(2, b'chatter ')\nos.write(2, b'kept')")
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True,
                           env={**os.environ, "MONKEYANIM_DEBUG": "0"})
    assert quiet.stderr == b"kept"
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          env={**os.environ, "MONKEYANIM_DEBUG": "1"})
    assert loud.stderr == b"chatter kept"
