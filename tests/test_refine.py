"""Keypoint refinement (`--refine-keypoints`): driving keypoints fitted to the driving video's
own motion, on the bundled mgif checkpoint and real MGif test videos."""

import json

import cv2
import pytest
import torch

import monkeyanim
from monkeyanim.framing import frame_batches
from monkeyanim.models import Keypoints
from monkeyanim.pipeline import Animator, KeypointRefiner
from monkeyanim.video import open_video

from conftest import assert_one_line_error, run_cli

FRAMES = 16  # one batch of each test video


@pytest.fixture(scope="module")
def mgif():
    return monkeyanim.load_model("mgif")


@pytest.fixture(scope="module")
def clips(datasets_dir):
    """The first 16 frames of three MGif test videos, (16, 3, 64, 64) each."""
    videos = sorted((datasets_dir / "mgif" / "test").glob("*.png"))[:3]
    return [next(frame_batches(open_video(v), (64, 64), FRAMES))[1] for v in videos]


def rebuilt_l1(model, frames, steps: int) -> float:
    animator = Animator(model, frames[0], mode="absolute", refine_steps=steps)
    return (animator(frames) - frames).abs().mean().item()


def test_refined_keypoints_rebuild_the_driving_video_better(mgif, clips):
    detector = [rebuilt_l1(mgif, frames, 0) for frames in clips]
    refined = [rebuilt_l1(mgif, frames, 8) for frames in clips]
    assert sum(refined) < 0.97 * sum(detector), (detector, refined)
    assert all(r < d for r, d in zip(refined, detector)), (detector, refined)


def test_refinement_does_not_depend_on_the_batch_size(datasets_dir, tmp_path):
    """Users lower --batch-size to fit in memory: frames are refined in chunks of a fixed
    length whatever it is, so the output stays the same."""
    video = sorted((datasets_dir / "mgif" / "test").glob("*.png"))[1]
    scores = set()
    for size in (1, 5, 8, 24):
        report = tmp_path / f"r{size}.json"
        result = run_cli("reconstruct", video, "-o", tmp_path / f"r{size}.mp4", "-c", "mgif",
                         "--refine-keypoints", "2", "--batch-size", size, "--json", report)
        assert result.returncode == 0, result.stderr
        scores.add(round(json.loads(report.read_text())["mean_l1"], 5))
    assert len(scores) == 1, scores


def test_corrections_carry_over_from_batch_to_batch(mgif, clips):
    """Frames refined in two batches of 8: the second batch starts from, and is held near,
    the first one's last correction, so the motion has no jump at the seam that a fresh
    refiner of the second half would make; the weights get no gradient."""
    frames = clips[0]
    kp = mgif.kp_detector(frames).detach()
    refiner = KeypointRefiner(mgif, frames[:1], kp[:1], steps=8)
    first, second = (refiner(frames[i:i + 8], kp[i:i + 8]) for i in (0, 8))
    fresh = KeypointRefiner(mgif, frames[:1], kp[:1], steps=8)(frames[8:], kp[8:])
    last = first.mean[7] - kp.mean[7]  # (K, 2) the correction before the seam
    assert last.abs().max() > 1e-3  # it did move them
    seam = (second.mean[0] - kp.mean[8] - last).norm(dim=-1).mean()
    fresh_seam = (fresh.mean[0] - kp.mean[8] - last).norm(dim=-1).mean()
    assert seam < 0.5 * fresh_seam, (seam, fresh_seam)
    assert all(p.grad is None for p in mgif.parameters())


def test_relative_animation_measures_motion_from_the_detected_first_frame(mgif, clips):
    source, frames = clips[1][0], clips[0]
    animator = Animator(mgif, source, mode="relative", refine_steps=4)
    out = animator(frames)
    assert out.shape == frames.shape and torch.isfinite(out).all()
    with torch.no_grad():  # the first frame's detected keypoints, not its refined ones
        detected = mgif.kp_detector(frames[:1]).mean
    assert torch.allclose(animator.kp_first.mean, detected, atol=1e-5)


def test_a_later_reference_frame_with_its_keypoints_already_found(mgif, clips):
    source, frames = clips[1][0], clips[0]
    with torch.no_grad():
        kp = mgif.kp_detector(frames[5:6])
    given = Animator(mgif, source, mode="relative", refine_steps=3)
    given.set_reference(frames[5], kp)
    # the keypoints given are used, not detected again (checked, as (1, K, ...) float32)
    moved = Keypoints(kp.mean + 0.01, kp.covar)
    other = Animator(mgif, source, mode="relative", refine_steps=3)
    other.set_reference(frames[5], moved)
    assert torch.equal(other.kp_first.mean, moved.mean)
    detected = Animator(mgif, source, mode="relative", refine_steps=3)
    detected.set_reference(frames[5])
    from_first = Animator(mgif, source, mode="relative", refine_steps=3)
    out = given(frames)
    assert torch.allclose(out, detected(frames), atol=1e-4)
    # motion measured from frame 5, not frame 0: a different animation
    assert (out - from_first(frames)).abs().mean() > 1e-3


def test_refinement_under_bf16_autocast(mgif, clips):
    frames = clips[2]
    fp32 = Animator(mgif, frames[0], mode="absolute", refine_steps=3)(frames)
    bf16 = Animator(mgif, frames[0], mode="absolute", refine_steps=3, precision="bf16")(frames)
    assert bf16.dtype in (torch.float32, torch.bfloat16)
    assert (bf16.float() - fp32).abs().mean() < 0.02


def test_cli_reconstruct_and_evaluate_with_refinement(datasets_dir, tmp_path):
    video = sorted((datasets_dir / "mgif" / "test").glob("*.png"))[0]
    scores = {}
    for steps in (0, 5):
        report = tmp_path / f"r{steps}.json"
        result = run_cli("reconstruct", video, "-o", tmp_path / f"r{steps}.mp4", "-c", "mgif",
                         "--refine-keypoints", steps, "--json", report)
        assert result.returncode == 0, result.stderr
        scores[steps] = json.loads(report.read_text())["mean_l1"]
    assert scores[5] < scores[0]
    report = tmp_path / "eval.json"
    result = run_cli("evaluate", datasets_dir / "mgif", "-c", "mgif", "--limit", "1",
                     "--refine-keypoints", "5", "--json", report)
    assert result.returncode == 0, result.stderr
    assert "refined 5" in result.stdout
    measured = json.loads(report.read_text())
    assert measured["refine_steps"] == 5 and measured["l1"] == pytest.approx(scores[5], abs=1e-4)


def test_cli_animate_best_frame_with_refinement(datasets_dir, tmp_path):
    videos = sorted((datasets_dir / "mgif" / "test").glob("*.png"))
    source = tmp_path / "source.png"  # another animal: the first frame of another video
    cv2.imwrite(str(source), cv2.cvtColor(next(open_video(videos[1]).frames()),
                                          cv2.COLOR_RGB2BGR))
    out = tmp_path / "out.mp4"
    result = run_cli("animate", source, videos[0], "-o", out, "-c", "mgif", "--mode",
                     "relative", "--find-best-frame", "--refine-keypoints", "2")
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def test_negative_refine_steps_is_a_one_line_error(tmp_path):
    result = run_cli("reconstruct", tmp_path / "missing.mp4", "-o", tmp_path / "o.mp4",
                     "--refine-keypoints", "-1")
    assert_one_line_error(result, "--refine-keypoints")
