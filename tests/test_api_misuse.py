"""Library calls a script gets wrong in small ways: each gives the library's own one-line
error, or the right result, rather than wrong frames, a hang or torch's traceback (the
findings of a review of the Python API, each reproduced before its fix)."""

import threading

import numpy as np
import pytest
import torch

import monkeyanim
from monkeyanim.errors import InputError
from monkeyanim.pipeline import Animator, relative_keypoints, to_tensor, to_uint8
from monkeyanim.video import fit_frame, open_video
from monkeyanim.videowriter import VideoWriter

from conftest import ROOT


@pytest.fixture(scope="module")
def frames():
    """The first 8 frames of the shapes example, (8, 3, 64, 64) float in [0, 1]."""
    video = open_video(ROOT / "examples" / "shapes" / "driving.mp4")
    return to_tensor([frame for _, frame in zip(range(8), video.frames())])


def test_an_animator_starts_afresh_for_another_driving_video(shapes, frames):
    """Its first driving frame was kept for good: a second video moved relative to the
    first video's start (frames off by up to 0.95)."""
    animator = Animator(shapes, frames[0], mode="relative")
    animator(frames[:4])
    reused = animator(frames[4:])
    fresh = Animator(shapes, frames[0], mode="relative")(frames[4:])
    assert (reused - fresh).abs().max() > 0.05  # a continuation of the first video
    animator.new_video()
    assert torch.equal(animator(frames[4:]), fresh)
    refined = Animator(shapes, frames[0], mode="relative", refine_steps=1)
    refined(frames[:4])
    refined.new_video()
    assert torch.equal(refined(frames[4:]),
                       Animator(shapes, frames[0], mode="relative", refine_steps=1)(frames[4:]))


def test_a_model_in_training_mode_is_refused_and_left_unchanged(frames):
    """BatchNorm in training mode learnt from the frames: the keypoints were wrong (by 1.1)
    and the model's own statistics changed for good."""
    model = monkeyanim.load_model("shapes")
    before = model.keypoints(frames).mean
    model.train()
    with pytest.raises(InputError, match=r"training mode.*model\.eval\(\)"):
        model.keypoints(frames)
    with pytest.raises(InputError, match="training mode"):
        Animator(model, frames[0])
    model.eval()
    assert torch.equal(model.keypoints(frames).mean, before)


def test_a_closed_video_writer_refuses_more_frames_rather_than_hang(tmp_path):
    """Frames written after close() were lost, and the 65th blocked for ever on a queue no
    thread emptied; a second close() failed in FFmpeg."""
    frame = np.full((32, 32, 3), 90, np.uint8)
    writer = VideoWriter(tmp_path / "a.mp4", 25)
    writer.write(frame)
    writer.close()
    writer.close()  # nothing more to do
    writer.abort()  # the file is written: it stays

    def write_many():
        for _ in range(70):
            writer.write(frame)

    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_raised(write_many)), daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive() and "is closed" in outcome[0]
    assert len(list(open_video(tmp_path / "a.mp4").frames())) == 1
    for fps in (np.int64(25), np.float32(12.5)):  # as numpy gives them
        with VideoWriter(tmp_path / "numpy.mp4", fps) as numpy_rate:
            numpy_rate.write(frame)
    (tmp_path / "numpy.mp4").unlink()
    for fps in (0, float("nan"), None, -5, "25"):
        with pytest.raises(InputError, match="fps must be a positive number"):
            VideoWriter(tmp_path / "b.mp4", fps)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # no temp file left


def _raised(call) -> str:
    try:
        call()
    except InputError as exc:
        return str(exc)
    return "nothing raised"


def test_settings_and_arguments_of_the_wrong_kind_are_said_by_name(shapes, datasets_dir):
    """These failed deep in cv2, FFmpeg or torch (a float size, a text fps, a slice of no
    frame), or were tried on each video of an evaluation and reported as the first one's
    failure after reading it."""
    from monkeyanim import AnimateSettings
    from monkeyanim.evaluation import evaluate

    settings = AnimateSettings(size=np.int64(96), fps=np.int64(10))  # numpy's numbers are taken
    assert settings.size == 96 and settings.fps == 10
    for settings, fragment in ((dict(size=64.5), "--size must be a whole number"),
                               (dict(size="64"), "--size must be a whole number"),
                               (dict(fps="25"), "--fps must be a number")):
        with pytest.raises(InputError, match=fragment):
            AnimateSettings(**settings)
    shapes_data = datasets_dir / "shapes"
    for kwargs, fragment in ((dict(batch_size=0), "--batch-size must be at least 1"),
                             (dict(limit=0), "limit must be at least 1"),
                             (dict(limit=1.5), "limit must be a whole number"),
                             (dict(precision="fp64"), "unknown precision"),
                             (dict(refine_steps=-1), "refine steps must be 0"),
                             (dict(crop="0,0,64,32"), "must be square")):
        with pytest.raises(InputError, match=fragment):
            evaluate(shapes, shapes_data, **kwargs)


def test_a_crop_box_is_taken_alike_by_every_job(shapes, tmp_path):
    """reconstruct_file refused the text '0,0,32,32' that AnimateSettings takes, and took a
    box that is not square (stretched frames); a fraction of a pixel was cut off."""
    from monkeyanim.faces import parse_crop

    video = ROOT / "examples" / "shapes" / "driving.mp4"
    as_text = monkeyanim.reconstruct_file(shapes, video, None, crop="0,0,32,32")
    as_box = monkeyanim.reconstruct_file(shapes, video, None, crop=(0, 0, 32, 32))
    assert as_text.extra["l1"] == as_box.extra["l1"]
    with pytest.raises(InputError, match="must be square"):
        monkeyanim.reconstruct_file(shapes, video, None, crop=(0, 0, 64, 16))
    with pytest.raises(InputError, match="x,y,w,h in pixels"):
        parse_crop((0.5, 0, 10, 10))
    assert parse_crop((0, 0, 10.0, np.int64(10))) == (0, 0, 10, 10)


def test_one_slip_in_the_readme_example_is_said_not_animated(shapes, frames):
    """kp for kp[:1] held every frame at the source's pose; a single frame for a list, a
    frame for a batch, a CUDA device on a CPU machine and a float size each failed deep in
    numpy, torch or cv2."""
    kp, kp_source = shapes.keypoints(frames), shapes.keypoints(frames[:1])
    with pytest.raises(InputError, match=r"kp_driving_first must be one frame's.*kp\[:1\]"):
        relative_keypoints(kp_source, kp, kp)
    assert relative_keypoints(kp_source, kp, kp[:1]).mean.shape == kp.mean.shape
    image = to_uint8(frames[:1])[0]  # (H, W, 3)
    for call, fragment in ((lambda: to_tensor(image), r"give \[frame\]"),
                           (lambda: to_uint8(frames[0]), r"frames\[None\] for one"),
                           (lambda: fit_frame(image, 64.0), "whole numbers of pixels"),
                           (lambda: fit_frame(image, 0), "whole numbers of pixels"),
                           (lambda: fit_frame(image.transpose(2, 0, 1), 64), "(H, W, 3) uint8"),
                           (lambda: fit_frame(image[:0], 64), "(H, W, 3) uint8")):
        with pytest.raises(InputError, match=fragment.replace("(H", r"\(H").replace("3)", r"3\)")):
            call()
    assert fit_frame(torch.from_numpy(image), 32).shape == (32, 32, 3)  # a reader's tensor
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            to_tensor([image], device="cuda")


def test_a_predictor_rollout_checks_what_it_is_given(shapes, frames):
    """frames=0 raised IndexError, float64 keypoints a GRU dtype error, keypoints of a whole
    video a reshape error, and no tracks ZeroDivisionError."""
    from monkeyanim.hub import predictor_path
    from monkeyanim.prediction import load_predictor, score_predictor

    predictor = load_predictor(predictor_path("shapes"))
    kp = shapes.keypoints(frames)
    assert predictor.rollout(kp[0], 5).mean.shape == (5, *kp.mean.shape[1:])
    double = monkeyanim.models.Keypoints(kp[0].mean.double(), kp[0].covar.double())
    assert torch.equal(predictor.rollout(double, 5).mean, predictor.rollout(kp[0], 5).mean)
    for call, fragment in ((lambda: predictor.rollout(kp[0], 0), "frames must be at least 1"),
                           (lambda: predictor.rollout(kp[0], 2.0), "must be a whole number"),
                           (lambda: predictor.rollout(kp, 5), "one frame's Keypoints"),
                           (lambda: score_predictor(predictor, []), "no tracks")):
        with pytest.raises(InputError, match=fragment):
            call()


def test_a_face_box_clamped_to_the_frames_edge_stays_inside_it():
    """x and the side, rounded apart (51.5 and 49.5 both up), put the box a pixel past the
    right edge, and fit_frame refused the frame."""
    from monkeyanim.faces import smooth_boxes

    track = smooth_boxes({0: (49, 0, 51, 51), 5: (50, 0, 52, 52)}, 10, 60, 101, window=1)
    for index in range(10):
        x, y, w, h = track[index]
        assert x + w <= 101 and y + h <= 60
        assert fit_frame(np.zeros((60, 101, 3), np.uint8), 64, track[index]).shape == (64, 64, 3)
