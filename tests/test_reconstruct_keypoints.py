"""`monkeyanim reconstruct` and `monkeyanim keypoints` on real videos."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

import monkeyanim
from monkeyanim.models import Keypoints
from monkeyanim.pipeline import to_tensor
from monkeyanim.video import fit_frame, open_video

from conftest import (ROOT, assert_one_line_error, probe, run_cli, run_cli_on_terminal,
                      sigint_default, write_video)


@pytest.fixture(scope="module")
def clips(face_frames, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    write_video(folder / "a.mp4", face_frames[:10])
    write_video(folder / "b.mkv", face_frames[10:16], fps=12)
    return folder


def test_reconstruct_l1_matches_frames(small_model, clips, face_frames, tmp_path):
    out, report = tmp_path / "rec.mp4", tmp_path / "m.json"
    result = run_cli("reconstruct", clips / "a.mp4", "-o", out, "-c", small_model, "--json", report)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(report.read_text())
    assert probe(out)["frames"] == 10
    # recompute L1 from the model directly on the decoded input frames
    from monkeyanim.video import open_video
    model = monkeyanim.load_model(small_model)
    frames = to_tensor([fit_frame(f, (64, 64)) for f in open_video(clips / "a.mp4").frames()])
    kp = model.keypoints(frames)
    predicted = model.generate(frames[0], kp[:1], kp).frames
    expected = (predicted - frames).abs().mean().item()
    assert metrics["videos"]["a.mp4"] == pytest.approx(expected, abs=1e-5)
    assert f"mean L1 {expected:.4f}" in result.stdout
    # what it printed is in the JSON too: frames, the baselines and their means
    static = (frames[:1] - frames).abs().mean().item()
    details = metrics["details"]["a.mp4"]
    assert details["frames"] == 10 and details["crop_detector"] is None
    assert details["static_l1"] == pytest.approx(static, abs=1e-5)
    assert metrics["mean_static_l1"] == details["static_l1"]
    assert metrics["mean_identity_l1"] == details["identity_l1"] > 0
    assert f"static_l1 {static:.4f}" in result.stdout
    # and what changes the numbers: checkpoint, refinement, precision
    assert (metrics["checkpoint"], metrics["refine_steps"], metrics["precision"]) == (
        str(small_model), 0, "fp32")


def test_reconstruct_folder(small_model, clips, tmp_path):
    out = tmp_path / "recs"
    result = run_cli("reconstruct", clips, "-o", out, "-c", small_model, "--json", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4"]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["mean_l1"] == pytest.approx(np.mean(list(metrics["videos"].values())))
    assert probe(out / "b.mp4")["fps"] == 12
    # --format webp: animated WebP outputs as long as the mp4s (libwebp may merge frames that
    # hardly differ, and this small model's barely move, into longer ones)
    result = run_cli("reconstruct", clips, "-o", tmp_path / "webps", "-c", small_model,
                     "--format", "webp")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "webps").iterdir()) == ["a.webp", "b.webp"]
    webp = open_video(tmp_path / "webps" / "b.webp")
    assert len(list(webp.frames())) / webp.fps == pytest.approx(probe(out / "b.mp4")["frames"]
                                                                / 12, abs=0.01)


def test_reconstruct_a_folder_of_frames_as_one_video(small_model, face_frames, tmp_path):
    """A folder of images alone is one video (its frames), as for animate and keypoints."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(face_frames[:6]):
        cv2.imwrite(str(frames / f"{i:03d}.png"), frame[..., ::-1])
    out = tmp_path / "rec.mp4"
    result = run_cli("reconstruct", frames, "-o", out, "-c", small_model)
    assert result.returncode == 0, result.stderr
    assert probe(out)["frames"] == 6 and "over 1 video\n" in result.stdout


def test_json_never_takes_the_place_of_an_output_or_input(small_model, clips, tmp_path):
    """--json naming one of a batch's videos to be written, or (with --overwrite) one of
    evaluate's test videos, is refused before any work; both stay as they were."""
    out = tmp_path / "recs"
    result = run_cli("reconstruct", clips, "-o", out, "-c", small_model, "--json", out / "a.mp4")
    assert_one_line_error(result, "names an output file itself")
    assert not (out / "a.mp4").exists()
    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    video = data / "test" / "a.mp4"
    video.write_bytes((clips / "a.mp4").read_bytes())
    result = run_cli("evaluate", data, "-c", small_model, "--json", video, "--overwrite")
    assert_one_line_error(result, "is the input")
    assert video.read_bytes() == (clips / "a.mp4").read_bytes()
    # named like a video among the videos, the next evaluate would have read it as one
    for command in (("evaluate", data), ("reconstruct", clips, "-o", tmp_path / "r"),
                    ("keypoints", clips / "a.mp4", "-o", tmp_path / "k.mp4")):
        result = run_cli(*command, "-c", small_model, "--json", data / "test" / "new.gif")
        assert_one_line_error(result, "named like a .gif file", "name it .json")
    assert not (data / "test" / "new.gif").exists()


def test_reconstruct_folder_goes_on_past_a_broken_video(small_model, clips, tmp_path):
    folder, out, report = tmp_path / "videos", tmp_path / "recs", tmp_path / "m.json"
    folder.mkdir()
    (folder / "a.mp4").write_bytes((clips / "a.mp4").read_bytes())
    (folder / "0-broken.mp4").write_bytes(b"garbage" * 100)  # first in order: must not stop it
    result = run_cli("reconstruct", folder, "-o", out, "-c", small_model, "--json", report)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "1 of 2 succeeded" in result.stdout
    assert [line for line in result.stderr.splitlines() if line.startswith("failed:")] == [
        "failed: 0-broken.mp4: cannot read video "
        f"{folder / '0-broken.mp4'}: Invalid data found when processing input"]
    assert [p.name for p in out.iterdir()] == ["a.mp4"]
    metrics = json.loads(report.read_text())
    assert list(metrics["videos"]) == ["a.mp4"] and list(metrics["failed"]) == ["0-broken.mp4"]
    assert metrics["mean_l1"] == metrics["videos"]["a.mp4"]

    # two videos that would write the same output: refused before either is written
    (folder / "0-broken.mp4").unlink()
    (folder / "a.mkv").write_bytes((clips / "b.mkv").read_bytes())
    result = run_cli("reconstruct", folder, "-o", tmp_path / "again", "-c", small_model)
    assert_one_line_error(result, "a.mkv and a.mp4 would be written to the same file")
    assert not list((tmp_path / "again").glob("*"))
    for command in ("reconstruct", "keypoints"):  # before the model loads: no checkpoint read
        result = run_cli(command, folder, "-o", tmp_path / "again", "-c",
                         tmp_path / "missing.safetensors")
        assert_one_line_error(result, "a.mkv and a.mp4 would be written to the same file")


def test_evaluate_reports_the_first_frame_rebuilt_from_itself(small_model, clips, tmp_path):
    report_path = tmp_path / "e.json"
    result = run_cli("evaluate", clips, "-c", small_model, "--json", report_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    from monkeyanim.video import open_video
    model = monkeyanim.load_model(small_model)
    first = to_tensor([fit_frame(next(open_video(clips / "a.mp4").frames()), (64, 64))])
    kp = model.keypoints(first)
    expected = (model.generate(first[0], kp, kp).frames - first).abs().mean().item()
    videos = report["videos"]
    assert videos["a.mp4"]["identity_l1"] == pytest.approx(expected, abs=1e-5)
    assert report["identity_l1"] == pytest.approx(
        (videos["a.mp4"]["identity_l1"] + videos["b.mkv"]["identity_l1"]) / 2)
    assert "L1, first frame" in result.stdout
    assert report["precision"] == "fp32"
    # --precision as reconstruct's, said in the report
    result = run_cli("evaluate", clips, "-c", small_model, "--json", report_path, "--overwrite",
                     "--precision", "bf16")
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    from monkeyanim.jobs import reconstruct_file
    bf16 = reconstruct_file(model, clips / "a.mp4", None, precision="bf16").extra["l1"]
    assert report["precision"] == "bf16" and report["videos"]["a.mp4"]["l1"] == pytest.approx(bf16)
    assert bf16 != pytest.approx(videos["a.mp4"]["l1"], abs=1e-6)
    assert_one_line_error(run_cli("evaluate", clips, "-c", small_model, "--precision", "fp16"),
                          "fp16 needs a CUDA device")
    for limit in ("0", "-1"):  # not read as "no limit"
        result = run_cli("evaluate", clips, "-c", small_model, "--limit", limit)
        assert_one_line_error(result, "--limit must be at least 1")


def test_evaluate_leaves_out_an_unreadable_video_and_says_so(small_model, clips, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.mp4", "b.mkv"):
        (data / name).symlink_to(clips / name)
    clean = tmp_path / "clean.json"
    assert run_cli("evaluate", data, "-c", small_model, "--json", clean).returncode == 0
    (data / "0-broken.mp4").write_bytes(b"garbage" * 100)  # first in order: read first
    report_path = tmp_path / "e.json"
    result = run_cli("evaluate", data, "-c", small_model, "--json", report_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"failed: 0-broken.mp4: cannot read video {data / '0-broken.mp4'}: Invalid data found "
        "when processing input"]
    assert "2 videos, 1 failed" in result.stdout
    report, expected = json.loads(report_path.read_text()), json.loads(clean.read_text())
    assert list(report["failed"]) == ["0-broken.mp4"] and expected["failed"] == {}
    assert report["videos"] == expected["videos"] and report["l1"] == expected["l1"]
    for name in ("a.mp4", "b.mkv"):
        (data / name).unlink()
    assert_one_line_error(run_cli("evaluate", data, "-c", small_model),
                          "no video in", "could be evaluated; 0-broken.mp4: cannot read video")


def test_keypoints_video_and_json(small_model, clips, tmp_path):
    out, tracks = tmp_path / "kp.mp4", tmp_path / "kp.json"
    result = run_cli("keypoints", clips / "a.mp4", "-o", out, "-c", small_model, "--json", tracks)
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert info["frames"] == 10 and info["width"] == 256
    document = json.loads(tracks.read_text())
    assert document["num_kp"] == 10 and len(document["frames"]) == 10
    mean = np.array(document["frames"][0]["mean"])
    covar = np.array(document["frames"][0]["covar"])
    assert mean.shape == (10, 2) and np.abs(mean).max() <= 1
    assert covar.shape == (10, 2, 2) and np.allclose(covar, covar.transpose(0, 2, 1), atol=1e-6)
    # float32 values written with the 7 significant digits they hold, not a float64's 17
    numbers = re.findall(r"-?\d[\d.]*(?:e-?\d+)?", json.dumps(document["frames"]))
    assert max(len(re.sub(r"\D", "", n.split("e")[0]).lstrip("0")) for n in numbers) <= 7
    # the drawing is over the (upscaled) frame: a small share of pixels changes colour
    from monkeyanim.video import open_video
    first = fit_frame(next(open_video(clips / "a.mp4").frames()), (64, 64))
    plain = cv2.resize(first, (256, 256), interpolation=cv2.INTER_CUBIC)
    changed = np.abs(info["first"].astype(int) - plain).sum(axis=2) > 60
    assert 0.001 < changed.mean() < 0.5


def test_keypoints_of_a_folder_of_videos(small_model, clips, tmp_path):
    """One drawing and one JSON per video, in --format; a broken video is reported and the
    others go on; an existing JSON is not replaced without --overwrite."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mkv"):
        (videos / name).symlink_to(clips / name)
    (videos / "broken.mp4").write_bytes(b"garbage" * 100)
    out, tracks = tmp_path / "drawn", tmp_path / "tracks"
    result = run_cli("keypoints", videos, "-o", out, "--json", tracks, "--format", "gif",
                     "-c", small_model)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "2 of 3 succeeded" in result.stdout and "broken.mp4" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.gif", "b.gif"]
    assert probe(out / "b.gif")["frames"] == 6
    assert [len(json.loads((tracks / f"{v}.json").read_text())["frames"]) for v in "ab"] == [10, 6]
    (out / "a.gif").unlink()
    before = (tracks / "a.json").read_bytes()
    result = run_cli("keypoints", videos, "-o", out, "--json", tracks, "--format", "gif",
                     "-c", small_model)
    assert "0 of 3 succeeded" in result.stdout and "a.json already exists" in result.stderr
    assert not (out / "a.gif").exists() and (tracks / "a.json").read_bytes() == before


def test_keypoints_on_image(small_model, face_frames, tmp_path):
    image = tmp_path / "face.jpg"
    cv2.imwrite(str(image), face_frames[0][..., ::-1])
    out = tmp_path / "kp.png"
    result = run_cli("keypoints", image, "-o", out, "-c", small_model)
    assert result.returncode == 0, result.stderr
    drawn = cv2.imread(str(out))[..., ::-1]
    plain = cv2.resize(fit_frame(face_frames[0], (64, 64)), (256, 256), interpolation=cv2.INTER_CUBIC)
    changed = np.abs(drawn.astype(int) - plain).sum(axis=2) > 60
    assert 0.001 < changed.mean() < 0.5  # dots and ellipses, not a blank or a copy


def test_a_wide_photo_read_as_a_short_strip_says_so(small_model, face_frames, tmp_path):
    """A 2:1 photo is a strip of 2 frames by the authors' rule: the user is told, since it may
    be one wide image; a strip of 4 frames or more is what the authors' datasets hold."""
    wide, strip = tmp_path / "wide.png", tmp_path / "strip.png"
    cv2.imwrite(str(wide), np.hstack(face_frames[:2])[..., ::-1])
    cv2.imwrite(str(strip), np.hstack(face_frames[:4])[..., ::-1])
    for source, out in ((wide, "drawn.png"), (wide, "drawn.mp4"), (strip, "strip.mp4")):
        result = run_cli("keypoints", source, "-o", tmp_path / out, "-c", small_model)
        assert result.returncode == 0, result.stderr
        noted = "was read as a strip of 2 square frames" in result.stderr
        assert noted == (source == wide), (out, result.stderr)


def test_keypoints_of_a_video_into_an_image_take_its_first_frame(small_model, clips, tmp_path):
    """The image shows the first frame; the JSON still holds every frame's keypoints, with
    the crop box that maps them back onto the video's pixels."""
    out, tracks = tmp_path / "first.png", tmp_path / "first.json"
    result = run_cli("keypoints", clips / "a.mp4", "-o", out, "--json", tracks, "-c", small_model)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out} (1 frame made in" in result.stdout  # not the 8 of the batch it came in
    document = json.loads(tracks.read_text())
    height, width = next(open_video(clips / "a.mp4").frames()).shape[:2]
    assert len(document["frames"]) == 10 and document["video_size"] == [height, width]
    assert document["crop_detector"] is None  # centred squares: no face detector placed them
    side = min(width, height)  # the centred square
    assert document["frames"][9]["crop"] == [(width - side) // 2, (height - side) // 2, side,
                                             side]
    assert ("pixel x = crop x + ((mean x + 1) / 2 * (w - 1) + 0.5) * crop w / w - 0.5"
            in document["coordinates"])
    result = run_cli("keypoints", clips / "a.mp4", "-o", tmp_path / "kp.bmp", "-c", small_model)
    assert_one_line_error(result, ".webp, .png, .jpg or .jpeg")


def test_errors(small_model, clips, tmp_path):
    result = run_cli("reconstruct", tmp_path / "none.mp4", "-o", tmp_path / "o.mp4", "-c", small_model)
    assert_one_line_error(result, "not found")
    result = run_cli("keypoints", clips / "a.mp4", "-o", tmp_path / "o.mp4", "-c", "nope.safetensors")
    assert_one_line_error(result, "checkpoint not found", "nope.safetensors")
    (tmp_path / "o.mp4").write_bytes(b"x")
    result = run_cli("keypoints", clips / "a.mp4", "-o", tmp_path / "o.mp4", "-c", small_model)
    assert_one_line_error(result, "already exists")


def test_progress_on_a_terminal(small_model, clips, tmp_path):
    code, shown, stdout = run_cli_on_terminal("evaluate", clips, "-c", small_model,
                                              tmp_path=tmp_path)
    assert code == 0, shown
    assert "evaluating" in shown and "2/2" in shown  # a bar over the videos
    assert "a.mp4: L1" not in stdout and "static source" in stdout  # the table alone
    code, shown, stdout = run_cli_on_terminal("reconstruct", clips / "a.mp4", "-o",
                                              tmp_path / "r.mp4", "-c", small_model,
                                              tmp_path=tmp_path)
    assert code == 0 and "10/10" in shown, shown
    code, shown, _ = run_cli_on_terminal("keypoints", clips / "b.mkv", "-o", tmp_path / "k.mp4",
                                         "-c", small_model, tmp_path=tmp_path)
    assert code == 0 and "6/6" in shown, shown


def test_a_video_cut_short_is_used_with_a_warning(small_model, face_frames, tmp_path):
    """A download stopped halfway leaves a Matroska file whose header still states the whole
    duration: its frames are used and each command says the file ended early (a variable frame
    rate video, whose rate times duration is no frame count, is not flagged)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    cut = write_video(folder / "cut.mkv", face_frames, fps=10)  # 4 s stated
    cut.write_bytes(cut.read_bytes()[:cut.stat().st_size // 2])
    gaps_ms = [40, 120, 40, 200, 80, 40] * 2
    write_video(folder / "vfr.webm", face_frames[:12], pts=np.cumsum(gaps_ms).tolist())
    warning = (rf"warning: {re.escape(str(cut))} ended at [0-9.]+ s of the 4\.0 s it states: "
               "the file may be cut short")

    report = tmp_path / "r.json"
    result = run_cli("reconstruct", folder, "-o", tmp_path / "out", "-c", small_model,
                     "--json", report)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and re.match(warning, warnings[0]), result.stderr
    assert 0 < probe(tmp_path / "out" / "cut.mp4")["frames"] < len(face_frames)
    assert "(1 warning)" in result.stdout
    assert list(json.loads(report.read_text())["warnings"]) == ["cut.mkv"]

    source = tmp_path / "source.png"
    cv2.imwrite(str(source), face_frames[0][..., ::-1])
    for args in (("animate", source, cut, "-o", tmp_path / "a.mp4"),
                 ("keypoints", cut, "-o", tmp_path / "k.gif"), ("evaluate", folder)):
        result = run_cli(*args, "-c", small_model)
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
        assert len(warnings) == 1 and re.match(warning, warnings[0]), (args, result.stderr)
    # train said nothing of it
    from conftest import TINY

    (tmp_path / "tiny.yaml").write_text(TINY)
    result = run_cli("train", folder, "-o", tmp_path / "run", "--config", tmp_path / "tiny.yaml",
                     "--iterations", "1", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert re.search(r"warning: 1 video\(s\) cut short, trained on as far as they decode; "
                     rf"first: {warning[len('warning: '):]}", result.stderr), result.stderr


def test_a_folder_of_frame_strips_is_a_batch_of_videos(datasets_dir, tmp_path):
    """The authors' test splits are folders of strips: each strip is a video, as `evaluate`
    reads them, not one frame of a single video; an image among videos that is no strip is
    left out with a warning."""
    strips = sorted((datasets_dir / "mgif" / "test").glob("*.png"))[:2]
    folder = tmp_path / "strips"
    folder.mkdir()
    for strip in strips:
        (folder / strip.name).symlink_to(strip)
    out = tmp_path / "out"
    result = run_cli("reconstruct", folder, "-o", out, "-c", "mgif")
    assert result.returncode == 0, result.stderr
    expected = [open_video(strip).num_frames for strip in strips]
    assert [probe(out / f"{s.stem}.mp4")["frames"] for s in strips] == expected
    cv2.imwrite(str(folder / "thumbnail.png"), np.zeros((64, 64, 3), np.uint8))
    result = run_cli("keypoints", folder, "-o", tmp_path / "drawn", "-c", "mgif")
    assert result.returncode == 0, result.stderr
    assert "warning: 1 image in" in result.stderr and "thumbnail.png" in result.stderr
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == [
        f"{s.stem}.mp4" for s in strips]
    # frames of a 2:1 video (1920x960, as streaming services shoot) stay one video's frames
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(3):
        cv2.imwrite(str(wide / f"{i:03d}.png"), np.full((96, 192, 3), 60 * i, np.uint8))
    result = run_cli("keypoints", wide, "-o", tmp_path / "wide.mp4", "-c", "mgif")
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "wide.mp4")["frames"] == 3


def test_a_batch_of_strips_is_told_by_more_than_its_first_image(datasets_dir, tmp_path):
    """A folder whose first image is a 2-frame strip (MGif's test 00019.png) or a still was
    read as the frames of one video (one meaningless L1); reconstruct and evaluate now read
    the same videos, and give the same mean."""
    import json

    folder = tmp_path / "strips"
    folder.mkdir()
    names = ["00019.png", "00020.png", "00021.png"]
    for name in names:
        (folder / name).symlink_to(datasets_dir / "mgif" / "test" / name)
    assert open_video(folder / "00019.png").num_frames == 2
    cv2.imwrite(str(folder / "0.png"), np.zeros((64, 64, 3), np.uint8))  # sorts first
    result = run_cli("reconstruct", folder, "-o", tmp_path / "out", "-c", "mgif", "--json",
                     tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert "warning: 1 image in" in result.stderr and "0.png" in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert sorted(report["videos"]) == names
    result = run_cli("evaluate", folder, "-c", "mgif", "--json", tmp_path / "e.json")
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["l1"] == pytest.approx(report["mean_l1"], abs=1e-6)
    # among video files, a 2:1 image is a poster, not a 2-frame video in the mean
    posters = tmp_path / "posters"
    posters.mkdir()
    (posters / "clip.mp4").symlink_to(ROOT / "examples/shapes/driving.mp4")
    cv2.imwrite(str(posters / "poster.png"), np.full((96, 192, 3), 128, np.uint8))
    result = run_cli("reconstruct", posters, "-o", tmp_path / "out2", "-c", "shapes")
    assert result.returncode == 0, result.stderr
    assert "1 image in" in result.stderr and "poster.png" in result.stderr
    assert "over 1 video" in result.stdout


def test_keypoints_are_drawn_where_the_models_grid_puts_them():
    """-1 and 1 are the centres of the model frame's first and last pixels: on a 64 px frame
    drawn at 256 px, -0.5 lies at the centre of model pixel 15.75, drawn pixel 64.5."""
    from monkeyanim.overlay import draw_keypoints

    black = np.zeros((64, 64, 3), np.uint8)
    for mean, expected in ((-0.5, 64.5), (0.0, 127.5), (0.5, 190.5)):
        drawn = draw_keypoints(black, Keypoints(torch.tensor([[mean, -mean]]))).sum(axis=-1)
        rows, columns = np.mgrid[:drawn.shape[0], :drawn.shape[1]]
        centre = [(drawn * at).sum() / drawn.sum() for at in (columns, rows)]  # x, y
        assert drawn.shape == (256, 256)
        assert np.allclose(centre, [expected, 255 - expected], atol=0.05), (mean, centre)
    # a model frame twice as wide as high: a round covariance is an ellipse twice as wide
    wide = np.zeros((64, 128, 3), np.uint8)
    kp = Keypoints(torch.zeros(1, 2), torch.eye(2)[None] * 0.04)  # sigma 0.2 of [-1, 1]
    drawn = draw_keypoints(wide, kp).sum(axis=-1) > 0
    rows, columns = np.nonzero(drawn)
    assert drawn.shape == (256, 512)
    half_width, half_height = np.ptp(columns) / 2, np.ptp(rows) / 2
    assert abs(half_width - 0.2 * 127 / 2 * 4) < 1.5 and abs(half_height - 0.2 * 63 / 2 * 4) < 1.5


def test_a_batch_goes_on_past_a_name_too_long_and_when_its_reader_leaves(small_model, clips,
                                                                          face_frames, tmp_path):
    """A pair whose output name the file system refuses (over 255 bytes) fails alone (it
    ended the batch); a closed stdout (`| head -1`) ends no batch (it did, silently, after
    the first line); without a terminal the sum-up is tab-separated lines."""
    sources, drivings = tmp_path / "sources", tmp_path / "drivings"
    sources.mkdir()
    drivings.mkdir()
    cv2.imwrite(str(sources / "b.png"), face_frames[0][..., ::-1])
    (sources / f"{'s' * 150}.png").symlink_to(sources / "b.png")
    (drivings / "a.mp4").symlink_to(clips / "a.mp4")
    (drivings / f"{'d' * 150}.mp4").symlink_to(clips / "a.mp4")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "monkeyanim", "animate", str(sources), str(drivings), "-o",
         str(out), "-c", str(small_model)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    process.stdout.close()  # the reader is gone before the first line
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 1 and "Traceback" not in stderr, stderr
    assert [line.split(":")[0] for line in stderr.splitlines()] == ["failed"]
    assert "File name too long" in stderr
    assert len(list(out.glob("*.mp4"))) == 3
    result = run_cli("animate", sources, drivings, "-o", out, "-c", small_model, "--overwrite")
    lines = result.stdout.splitlines()
    assert "source\tdriving\tresult" in lines and "b.png\ta.mp4\tok, 10 frames" in lines
    assert lines[-1] == "3 of 4 succeeded"


def test_a_stopped_batch_sums_up_and_keeps_the_numbers_of_what_it_did(small_model, clips,
                                                                     tmp_path):
    """Ctrl-C mid-batch: the videos done are listed, counted and their numbers written to
    --json, with those not run named (all was lost)."""
    folder, out, report = tmp_path / "videos", tmp_path / "out", tmp_path / "m.json"
    folder.mkdir()
    for index in range(12):
        (folder / f"v{index:02d}.mp4").symlink_to(clips / "a.mp4")
    process = subprocess.Popen(
        [sys.executable, "-m", "monkeyanim", "reconstruct", str(folder), "-o", str(out), "-c",
         str(small_model), "--json", str(report)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("v*.mp4"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    done = len(list(out.glob("v*.mp4")))
    assert 2 <= done < 12
    assert f"{done} of 12 succeeded ({12 - done} not run: stopped)" in stdout
    metrics = json.loads(report.read_text())
    assert len(metrics["videos"]) == done and len(metrics["not_run"]) == 12 - done


def test_skip_existing_finishes_a_batch_and_leaves_what_is_there(small_model, clips, face_frames,
                                                                   tmp_path):
    """A rerun with --skip-existing runs only the videos (pairs) whose outputs are missing:
    those there are left as they are and listed as skipped, in --json too; alone, a command
    whose output is there says so and succeeds; with --overwrite it is refused."""
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir()
    for index in range(2):
        (folder / f"v{index}.mp4").symlink_to(clips / "a.mp4")
    assert run_cli("reconstruct", folder, "-o", out, "-c", small_model).returncode == 0
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    (folder / "v2.mkv").symlink_to(clips / "b.mkv")
    report = tmp_path / "m.json"
    result = run_cli("reconstruct", folder, "-o", out, "-c", small_model, "--skip-existing",
                     "--json", report)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "v0.mp4\tskipped: already there" in lines and "v2.mkv\tok, 6 frames" in lines
    assert lines[-2] == "1 of 3 succeeded (2 skipped: already there)"
    assert lines[-1].startswith("mean L1 ") and lines[-1].endswith(" over 1 video")
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir() if path.name in before} \
        == before and (out / "v2.mp4").is_file()
    metrics = json.loads(report.read_text())
    assert list(metrics["videos"]) == ["v2.mkv"] and metrics["skipped"] == ["v0.mp4", "v1.mp4"]
    # its --json is this run's alone: one there is an earlier run's, and stays
    result = run_cli("reconstruct", folder, "-o", out, "-c", small_model, "--skip-existing",
                     "--json", report)
    assert_one_line_error(result, "--json", "already there", "name another file")
    result = run_cli("reconstruct", folder, "-o", out, "--skip-existing", "--overwrite")
    assert_one_line_error(result, "--overwrite", "--skip-existing", "choose one")

    # one video, or one pair, whose output is there: said, and a success
    for args in (("reconstruct", clips / "a.mp4"),
                 ("animate", tmp_path / "source.png", clips / "a.mp4")):
        cv2.imwrite(str(tmp_path / "source.png"), face_frames[0][..., ::-1])
        result = run_cli(*args, "-o", out / "v0.mp4", "-c", small_model, "--skip-existing")
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert result.stdout.strip() == f"skipped {out / 'v0.mp4'}: already there (--skip-existing)"
    assert (out / "v0.mp4").stat().st_mtime_ns == before["v0.mp4"]

    # keypoints: a video is done once its drawing and its JSON are both there
    drawn, tracks = tmp_path / "drawn", tmp_path / "tracks"
    assert run_cli("keypoints", folder, "-o", drawn, "--json", tracks, "-c", small_model
                   ).returncode == 0
    (tracks / "v1.json").unlink()  # as a stop between the two leaves it: the JSON alone
    drawing = (drawn / "v1.mp4").stat().st_mtime_ns
    result = run_cli("keypoints", folder, "-o", drawn, "--json", tracks, "-c", small_model,
                     "--skip-existing")
    assert result.returncode == 0 and "v1.mp4\tok, 10 frames" in result.stdout, result.stderr
    assert result.stdout.splitlines()[-1] == "1 of 3 succeeded (2 skipped: already there)"
    assert (tracks / "v1.json").is_file() and (drawn / "v1.mp4").stat().st_mtime_ns == drawing
    (drawn / "v0.mp4").unlink()  # and the other way: the drawing alone
    written = (tracks / "v0.json").stat().st_mtime_ns
    result = run_cli("keypoints", folder, "-o", drawn, "--json", tracks, "-c", small_model,
                     "--skip-existing")
    assert result.returncode == 0 and "v0.mp4\tok, 10 frames" in result.stdout, result.stderr
    assert (drawn / "v0.mp4").is_file() and (tracks / "v0.json").stat().st_mtime_ns == written
    # one video alone the same way
    (tracks / "v2.json").unlink()
    result = run_cli("keypoints", folder / "v2.mkv", "-o", drawn / "v2.mp4", "--json",
                     tracks / "v2.json", "-c", small_model, "--skip-existing")
    assert result.returncode == 0 and (tracks / "v2.json").is_file(), result.stderr

    # what is no output of ours is not taken for one: a folder, an empty file
    (out / "v0.mp4").unlink()
    (out / "v0.mp4").mkdir()
    (out / "v1.mp4").write_bytes(b"")
    result = run_cli("reconstruct", folder, "-o", out, "-c", small_model, "--skip-existing")
    assert result.returncode == 1 and "v0.mp4\tfailed: " in result.stdout, result.stderr
    assert "v1.mp4\tfailed: " in result.stdout and "v2.mkv\tskipped" in result.stdout
    assert "v1.mp4 already exists, empty: delete it" in result.stderr  # (not just --overwrite)
    # alone, the inputs are checked first: a mistyped one is no success
    for args in (("reconstruct", tmp_path / "typo.mp4"),
                 ("keypoints", tmp_path / "typo.mp4"),
                 ("animate", tmp_path / "source.png", tmp_path / "typo.mp4")):
        result = run_cli(*args, "-o", out / "v2.mp4", "-c", small_model, "--skip-existing")
        assert_one_line_error(result, "not found")


def test_a_folder_of_animated_images_is_a_batch_and_an_empty_one_is_named(small_model, clips,
                                                                          tmp_path):
    """animate --format webp's own outputs, in a folder, are videos (they were read as one
    video's frames, 3 frames from three animations); a folder with nothing to read says so
    before the model loads (the error named -o's suffix)."""
    webps = tmp_path / "webps"
    webps.mkdir()
    for name in ("x.webp", "y.webp"):
        result = run_cli("reconstruct", clips / "a.mp4", "-o", webps / name, "-c", small_model)
        assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    result = run_cli("reconstruct", webps, "-o", out, "-c", small_model)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["x.mp4", "y.mp4"]
    # the 10 frames of 40 ms (libwebp merges those alike into longer ones: the time is kept)
    assert probe(out / "x.mp4")["video_seconds"] == pytest.approx(0.4, abs=0.05)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing to see")
    for command in (("reconstruct", empty, "-o", tmp_path / "e"),
                    ("keypoints", empty, "-o", tmp_path / "e"),
                    ("animate", clips / "a.mp4", empty, "-o", tmp_path / "e.mp4")):
        result = run_cli(*command, "-c", tmp_path / "not-loaded.safetensors")
        assert_one_line_error(result, f"folder {empty} holds no videos, animated images")


def test_a_stopped_evaluate_reports_the_videos_it_measured(small_model, clips, tmp_path):
    """Ctrl-C in evaluate ends the video under way and reports those measured, in --json too,
    naming the others (the whole report was lost); exit code 130."""
    folder, report = tmp_path / "videos", tmp_path / "m.json"
    folder.mkdir()
    for index in range(12):
        (folder / f"v{index:02d}.mp4").symlink_to(clips / "a.mp4")
    process = subprocess.Popen(
        [sys.executable, "-m", "monkeyanim", "evaluate", str(folder), "-c", str(small_model),
         "--json", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_default, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for _ in range(2):  # one line per video measured, without a terminal
        assert ": L1 " in process.stdout.readline()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert "of the videos not run (the report holds those measured)" in stderr
    metrics = json.loads(report.read_text())
    assert len(metrics["videos"]) + len(metrics["not_run"]) == 12
    assert 2 <= len(metrics["videos"]) < 12 and "static source" in stdout


def test_folders_inside_a_batch_folder_are_said_to_be_left_out(small_model, clips, tmp_path):
    """A batch reads the videos of its folder, not its subfolders (evaluate reads a folder of
    frames there as a video): the user is told, but of the folder the batch writes to."""
    folder = tmp_path / "videos"
    (folder / "frames").mkdir(parents=True)
    (folder / "a.mp4").symlink_to(clips / "a.mp4")
    for index in range(3):
        cv2.imwrite(str(folder / "frames" / f"{index:03d}.png"), np.zeros((64, 64, 3), np.uint8))
    result = run_cli("reconstruct", folder, "-o", folder / "out", "-c", small_model)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "1 folder in" in warnings[0] and warnings[0].endswith(": frames")
    # a folder of frames as the one driving video of a batch of sources leaves nothing out
    sources = tmp_path / "sources"
    sources.mkdir()
    cv2.imwrite(str(sources / "s.png"), np.full((64, 64, 3), 90, np.uint8))
    result = run_cli("animate", sources, folder / "frames", "-o", tmp_path / "made", "-c",
                     small_model)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr


def test_a_stop_once_a_jobs_output_is_whole_waits_for_its_result():
    """A Ctrl-C that lands between a batch job's output being renamed into place and the job
    handing back its result ended the batch with that output counted as not run (its numbers
    lost): it now waits for the result; before the output is whole, it stops at once."""
    from monkeyanim import files, stops
    from monkeyanim.errors import Interrupted

    saved = {sig: signal.getsignal(sig) for sig in stops.STOP_SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stops.install()
        kept = []
        with pytest.raises(Interrupted) as stopped:
            with stops.JOB_STOP:
                files.published_count += 1  # the job's output renamed into place
                os.kill(os.getpid(), signal.SIGINT)
                kept.append("result")  # the job goes on to hand it back
        assert kept == ["result"] and stopped.value.exit_code == 130
        with pytest.raises(Interrupted):  # nothing published yet: at once
            with stops.JOB_STOP:
                os.kill(os.getpid(), signal.SIGINT)
                kept.append("not reached")
        assert kept == ["result"]
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
