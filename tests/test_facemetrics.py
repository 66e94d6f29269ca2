"""AKD / MKR / AED with dlib on real faces (installed from PyPI, offline)."""

import json

import cv2
import numpy as np
import pytest

from monkeyanim.checkpoint import save_checkpoint
from monkeyanim.facemetrics import DlibFaces, FaceScores, unavailable_reason
from monkeyanim.faces import HaarDetector, crop_box, largest
from monkeyanim.video import fit_frame, open_video
import monkeyanim

from conftest import run_cli, write_video


def face_crops(path, count, step=5):
    frames = []
    for i, frame in enumerate(open_video(path).frames()):
        if i % step == 0:
            box = crop_box(largest(HaarDetector()(frame)), *frame.shape[:2])
            frames.append(fit_frame(frame, (256, 256), box))
        if len(frames) == count:
            break
    return frames


@pytest.fixture(scope="module")
def faces():
    assert unavailable_reason() is None  # the test extra installs dlib-bin + its models
    return DlibFaces()


@pytest.fixture(scope="module")
def may(datasets_dir):
    return face_crops(datasets_dir / "faces" / "real3d-may.mp4", 4)


def test_identical_frames_score_zero(faces, may):
    scores = FaceScores()
    for frame in may:
        measure = faces(frame)
        assert measure.landmarks.shape == (68, 2) and measure.embedding.shape == (128,)
        scores.add(measure, measure)
    assert scores.result() == {"akd": 0.0, "mkr": 0.0, "aed": 0.0}


def test_shift_blank_and_other_person(faces, may, datasets_dir):
    shift = np.float32([[1, 0, 8], [0, 1, 0]])
    moved = [cv2.warpAffine(f, shift, (256, 256), borderMode=cv2.BORDER_REPLICATE) for f in may]
    scores = FaceScores()
    for a, b in zip(may, moved):
        scores.add(faces(a), faces(b))
    result = scores.result()
    assert 5 < result["akd"] < 11 and result["mkr"] == 0 and result["aed"] < 0.3
    blank = FaceScores()
    for a in may:
        blank.add(faces(a), faces(np.zeros_like(a)))
    assert blank.result()["mkr"] == 1.0 and isinstance(blank.result()["akd"], str)
    other = face_crops(datasets_dir / "faces" / "lia-vox3.mov", 4)
    people = FaceScores()
    for a, b in zip(may, other):
        people.add(faces(a), faces(b))
    assert people.result()["aed"] > result["aed"] + 0.2


def test_evaluate_measures_face_models(small_model, face_frames, tmp_path):
    model = monkeyanim.load_model(small_model)
    checkpoint = tmp_path / "face.safetensors"
    save_checkpoint(model, checkpoint, provenance={"name": "small-face", "face_model": True})
    (tmp_path / "data" / "test").mkdir(parents=True)
    write_video(tmp_path / "data" / "test" / "may.mp4", face_frames[:12])
    result = run_cli("evaluate", tmp_path / "data", "-c", checkpoint, "--json", tmp_path / "e.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["detector"] == "dlib-68"  # the metrics'; the crops' detector is named too
    assert report["crop_detector"] == report["videos"]["may.mp4"]["crop_detector"] in (
        "dlib-hog", "opencv-haar", "face-alignment-sfd", "mediapipe-blazeface")
    assert 0 <= report["mkr"] <= 1  # random weights: faces mostly lost in the output
    # the static-source baseline: the first frame (a real face) against every real frame
    assert report["static_mkr"] == 0 and 0 < report["static_akd"] < 20
    assert set(report) & {"akd", "aed"} or set(report["unavailable"]) >= {"akd", "aed"}
