"""Face crops on real faces from ../shared, with the detectors that run offline here: OpenCV's
bundled cascade, dlib's HOG (dlib-bin, in the test extra) and face-alignment's SFD wiring."""

import csv

import cv2
import numpy as np
import pytest
import torch

from monkeyanim.checkpoint import save_checkpoint
from monkeyanim import faces as facelib
from monkeyanim.faces import (DlibHogDetector, HaarDetector, get_detector, largest,
                              sfd_weights_path, track_faces)
from monkeyanim.video import open_video
import monkeyanim

from conftest import (ROOT, assert_one_line_error, probe, run_cli, run_cli_on_terminal,
                      write_video)

MEAD = "mead-M003_level_1_disgusted_015.mp4"  # 1920x1080, a small face in a big frame


def first_frames(path, count):
    frames = []
    for frame in open_video(path).frames():
        frames.append(frame)
        if len(frames) == count:
            break
    return frames


@pytest.fixture(scope="module")
def mead_png(datasets_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("mead") / "mead.png"
    cv2.imwrite(str(path), first_frames(datasets_dir / "faces" / MEAD, 1)[0][..., ::-1])
    return path


@pytest.fixture(scope="module")
def face_checkpoint(small_model, tmp_path_factory):
    """The small model re-saved with metadata saying it is a face model."""
    model = monkeyanim.load_model(small_model)
    path = tmp_path_factory.mktemp("face") / "face.safetensors"
    save_checkpoint(model, path, provenance={"name": "small-face", "face_model": True})
    return path


@pytest.mark.parametrize("make", [HaarDetector, DlibHogDetector], ids=["haar", "dlib"])
@pytest.mark.parametrize("name", [MEAD, "real3d-may.mp4", "lia-vox3.mov", "retalking-2.mp4",
                                  "liveportrait-d13.mp4"])
def test_detector_finds_the_face(make, name, datasets_dir):
    detector = make()
    for frame in first_frames(datasets_dir / "faces" / name, 30)[::10]:
        faces = sorted(detector(frame), key=lambda b: -b[2])
        assert faces, name
        x, y, w, h = faces[0]  # the largest is the face; stray hits are far smaller
        assert 0.05 * max(frame.shape) < w < 0.9 * min(frame.shape[:2])
        assert all(other[2] < 0.5 * w for other in faces[1:]), (name, faces)


def test_dlib_boxes_are_mapped_onto_the_haar_framing(datasets_dir):
    """Crops look the same whichever detector ran: dlib's tighter, lower box is moved onto
    the cascade's (the mapping was measured on all 39 videos; these are five of them)."""
    haar, dlib = HaarDetector(), DlibHogDetector()
    errors = {"mapped": [], "raw": []}
    for name in ("real3d-may.mp4", "lia-vox1.mp4", "retalking-3.mp4", "dpe-s.mp4", MEAD):
        frame = first_frames(datasets_dir / "faces" / name, 1)[0]
        a = largest(haar(frame))
        for kind, box in (("mapped", largest(dlib(frame))), ("raw", largest(dlib.raw(frame)))):
            size = abs(box[2] / a[2] - 1)  # side, relative
            drop = abs(box[1] + box[3] / 2 - a[1] - a[3] / 2) / a[2]  # centre height, relative
            errors[kind].append(size + drop)
            if kind == "mapped":
                assert size < 0.2 and drop < 0.08, (name, a, box)
    assert np.mean(errors["mapped"]) < 0.6 * np.mean(errors["raw"]), errors


def test_most_accurate_installed_detector_is_chosen(datasets_dir, tmp_path, monkeypatch):
    """dlib's HOG when face-alignment has no weights on disk (never downloaded); face-alignment
    as soon as they are there. The real weights cannot be fetched offline, so random ones of
    the right architecture stand in: this checks the wiring, not the accuracy."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert isinstance(get_detector(), DlibHogDetector) or get_detector().name == "mediapipe-blazeface"
    from face_alignment.detection.sfd.net_s3fd import s3fd

    torch.manual_seed(0)
    sfd_weights_path().parent.mkdir(parents=True)
    torch.save(s3fd().state_dict(), sfd_weights_path())
    detector = get_detector()
    assert isinstance(detector, facelib.FaceAlignmentDetector)
    frame = first_frames(datasets_dir / "faces" / "real3d-may.mp4", 1)[0]
    boxes = detector(frame)
    assert all(len(box) == 4 and all(isinstance(v, int) for v in box) for box in boxes)
    sfd_weights_path().write_bytes(b"not a checkpoint")  # corrupt: fall back, do not fail
    assert not isinstance(get_detector(), facelib.FaceAlignmentDetector)


def test_track_is_smooth(datasets_dir):
    frames = first_frames(datasets_dir / "faces" / "lia-vox3.mov", 80)
    track, count = track_faces(frames, HaarDetector())
    assert count == 80
    steps = np.abs(np.diff(track.boxes, axis=0)).max()
    assert steps <= 3.0  # pixels per frame: the crop glides, it does not jump
    assert len(set(track.boxes[:, 2])) == 1  # one size for the whole video


def test_auto_crop_and_paste_back(small_model, mead_png, face_video, tmp_path):
    out = tmp_path / "pasted.mp4"
    result = run_cli("animate", mead_png, face_video, "-o", out, "-c", small_model,
                     "--crop", "auto", "--paste-back")
    assert result.returncode == 0, result.stderr
    assert f"detector {get_detector().name}" in result.stdout
    info = probe(out)
    assert (info["height"], info["width"]) == (1080, 1920)
    source = cv2.imread(str(mead_png))[..., ::-1].astype(int)
    face = largest(HaarDetector()(source.astype(np.uint8)))
    far = np.abs(info["first"][:, :300] - source[:, :300]).mean()  # left edge: untouched
    near = np.abs(info["first"][face[1]:face[1] + face[3], face[0]:face[0] + face[2]]
                  - source[face[1]:face[1] + face[3], face[0]:face[0] + face[2]]).mean()
    assert far < 3 and near > 3 * far


def test_a_face_unseen_for_seconds_is_said(small_model, face_frames, tmp_path):
    """The face leaves the frame (here: 2.4 s of empty wall after 1.6 s of talking): the crop
    holds where it was and the motion there is not a face's, which the user is told; a face
    seen throughout gets no such warning."""
    from conftest import write_video

    wall = np.full_like(face_frames[0], 128)
    video = write_video(tmp_path / "leaves.mp4", face_frames + [wall] * 60, fps=25)
    result = run_cli("reconstruct", video, "-o", tmp_path / "r.mp4", "-c", small_model,
                     "--crop", "auto")
    assert result.returncode == 0, result.stderr
    assert "warning: no face seen in leaves.mp4 from 1.6 s to 4.0 s" in result.stderr
    assert "the crop holds where the face was" in result.stderr
    still = write_video(tmp_path / "stays.mp4", face_frames, fps=25)
    result = run_cli("keypoints", still, "-o", tmp_path / "k.mp4", "-c", small_model,
                     "--crop", "auto")
    assert result.returncode == 0 and "no face seen" not in result.stderr, result.stderr


def test_faces_in_photos_a_small_one_several_and_a_box_for_the_source_alone(
        small_model, mead_png, face_video, tmp_path):
    """A face of 100 px in a 4000x3000 photo shrinks to 16 px at the usual detection size:
    looked for again larger, it is found (it was "no face found"). Of two faces, the
    largest is taken and the user told. A box in the photo's pixels crops the photo alone
    with --driving-crop (it was applied to the driving video too, and lay outside it)."""
    frame = cv2.imread(str(mead_png))[..., ::-1]
    face_video = write_video(tmp_path / "talk.mp4", first_frames(face_video, 8))
    x, y, side, _ = facelib.crop_box(DlibHogDetector()(frame)[0], *frame.shape[:2])
    face = np.ascontiguousarray(frame[y:y + side, x:x + side])
    photo = np.full((3000, 4000, 3), 120, np.uint8)
    photo[2600:2850, 3500:3750] = cv2.resize(face, (250, 250), interpolation=cv2.INTER_AREA)
    dlib = DlibHogDetector()
    assert dlib(photo) == []
    found = dlib.in_photo(photo)
    assert len(found) == 1 and 3450 < found[0][0] < 3650 and 2550 < found[0][1] < 2750
    two = np.full((600, 1200, 3), 120, np.uint8)
    two[50:550, 650:1150] = cv2.resize(face, (500, 500), interpolation=cv2.INTER_AREA)
    two[150:450, 100:400] = cv2.resize(face, (300, 300), interpolation=cv2.INTER_AREA)
    found = dlib.in_photo(two)
    assert len(found) == 2 and found[0][0] > 600  # the larger face
    cv2.imwrite(str(tmp_path / "two.png"), two[..., ::-1])
    result = run_cli("animate", tmp_path / "two.png", face_video, "-o", tmp_path / "two.mp4",
                     "-c", small_model, "--crop", "auto")
    assert result.returncode == 0 and "warning: 2 faces found in two.png" in result.stderr, \
        result.stderr
    cv2.imwrite(str(tmp_path / "big.png"), photo[..., ::-1])
    box = ("--crop", "3450,2550,350,350")
    result = run_cli("animate", tmp_path / "big.png", face_video, "-o", tmp_path / "box.mp4",
                     "-c", small_model, *box)
    assert_one_line_error(result, "lies outside frame 0 of")
    result = run_cli("animate", tmp_path / "big.png", face_video, "-o", tmp_path / "box.mp4",
                     "-c", small_model, *box, "--driving-crop", "auto", "--paste-back")
    assert result.returncode == 0, result.stderr
    assert (probe(tmp_path / "box.mp4")["width"], probe(tmp_path / "box.mp4")["height"]) == \
        (4000, 3000)
    result = run_cli("animate", tmp_path / "big.png", face_video, "-o", tmp_path / "b.mp4",
                     "-c", small_model, "--crop", "0,0,300,200")
    assert_one_line_error(result, "must be square")


def test_of_two_people_the_track_follows_one(face_frames, tmp_path):
    """Two faces whose sizes take turns being the larger: the crop stays on the one it
    started with (it swapped from one to the other, and crop cut no clip of 32 frames)."""
    face = face_frames[0]
    x, y, side, _ = facelib.crop_box(DlibHogDetector()(face)[0], *face.shape[:2])
    face = np.ascontiguousarray(face[y:y + side, x:x + side])
    frames = []
    for index in range(40):
        frame = np.full((320, 640, 3), 120, np.uint8)
        left = 300 if index // facelib.TRACK_DETECT_EVERY % 2 == 0 else 250
        frame[10:10 + left, 10:10 + left] = cv2.resize(face, (left, left))
        frame[20:300, 340:620] = cv2.resize(face, (280, 280))
        frames.append(frame)
    track, count = track_faces(frames, DlibHogDetector())
    assert count == 40 and all(track[i][0] < 160 for i in range(count))
    video = write_video(tmp_path / "two.mp4", frames)
    result = run_cli("crop", video, "-o", tmp_path / "clips", "--size", "64")
    assert result.returncode == 0 and "two.mp4: 1 clip(s), 40 frames" in result.stdout, \
        result.stdout + result.stderr


def test_a_face_missed_once_is_still_followed():
    """The face followed, missed at one detection (turned away) while another is found
    elsewhere, is not left for the other; missed at two in a row, the box jumps to the other
    from the first miss."""
    follow = facelib.FaceFollower()
    a, b = (100, 100, 100, 100), (500, 100, 96, 96)
    assert follow(0, [a, b]) == (a, None)
    assert follow(5, [b]) == (None, None)  # one miss: perhaps a head turned
    assert follow(10, [a, b]) == (a, None)
    assert follow(15, [b]) == (None, None)
    assert follow(20, []) == (None, None)
    assert follow(25, [b]) == (b, 15)  # gone since 15: a cut there
    assert follow(30, [a, b]) == (b, None)


def test_at_a_cut_the_crop_jumps_rather_than_glides(face_frames):
    """A face on the left, then (a cut the colours barely show: a grey backdrop) on the
    right: the box moves in one step, not across half a second of half faces; within a shot
    it glides as before."""
    frames = []
    for index in range(40):
        frame = np.full((320, 960, 3), 120, np.uint8)
        left = 20 if index < 20 else 640
        frame[10:310, left:left + 300] = cv2.resize(face_frames[index], (300, 300))
        frames.append(frame)
    track, _ = track_faces(frames, DlibHogDetector())
    xs = [track[i][0] for i in range(40)]
    assert max(xs[:20]) < 100 and min(xs[20:]) > 560, xs


def test_auto_is_the_default_for_face_models(face_checkpoint, mead_png, face_video, tmp_path):
    result = run_cli("animate", mead_png, face_video, "-o", tmp_path / "a.mp4", "-c",
                     face_checkpoint)
    assert result.returncode == 0, result.stderr
    assert f"detector {get_detector().name}" in result.stdout
    result = run_cli("animate", mead_png, face_video, "-o", tmp_path / "b.mp4", "-c",
                     face_checkpoint, "--crop", "none")
    assert result.returncode == 0 and "detector" not in result.stdout


def test_no_face_is_one_line(small_model, face_video, tmp_path):
    result = run_cli("animate", ROOT / "examples/shapes/source.png", face_video, "-o",
                     tmp_path / "o.mp4", "-c", small_model, "--crop", "auto")
    assert_one_line_error(result, "no face found in source.png")
    result = run_cli("animate", ROOT / "examples/shapes/source.png", face_video, "-o",
                     tmp_path / "o.mp4", "-c", small_model, "--paste-back", "--size", "128")
    assert_one_line_error(result, "--paste-back")


def test_an_unreadable_frame_is_not_reported_as_no_face(face_checkpoint, face_frames, tmp_path):
    """Auto-crop tracks the face over every frame first: a frame that cannot be read says
    so, rather than "no face found"."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(face_frames[:6]):
        cv2.imwrite(str(frames / f"{i:03d}.png"), frame[..., ::-1])
    (frames / "006.png").write_bytes(b"garbage")
    result = run_cli("reconstruct", frames, "-o", tmp_path / "o.mp4", "-c", face_checkpoint)
    assert_one_line_error(result, "cannot read image", "006.png")


def test_train_predictor_crops_faces_as_predict_does(face_checkpoint, face_frames,
                                                    datasets_dir, tmp_path):
    """A face checkpoint's predictor learns the keypoints of face crops, the ones predict
    will roll out: a video without a face is left out, named; --crop none takes it."""
    data = tmp_path / "data"
    data.mkdir()
    write_video(data / "face.mp4", face_frames[:20])
    strip = sorted((datasets_dir / "shapes" / "test").iterdir())[0]
    (data / strip.name).symlink_to(strip)
    options = ("-c", face_checkpoint, "--epochs", "1", "--hidden", "8", "--frames", "8")
    result = run_cli("train-predictor", data, "-o", tmp_path / "p.safetensors", *options)
    assert result.returncode == 0, result.stderr
    assert f"skipped 1 unreadable file(s), first: {strip.name}: no face found" in result.stderr
    result = run_cli("train-predictor", data, "-o", tmp_path / "q.safetensors", *options,
                     "--crop", "none")
    assert result.returncode == 0 and "unreadable" not in result.stderr, result.stderr
    assert "trained on 2 videos" in result.stdout


def test_crop_tool_cuts_at_shot_changes(datasets_dir, tmp_path):
    shot_a = first_frames(datasets_dir / "faces" / "real3d-may.mp4", 45)
    shot_b = [cv2.resize(f, (512, 512)) for f in first_frames(datasets_dir / "faces" / "lia-vox3.mov", 40)]
    junk = [np.zeros((512, 512, 3), np.uint8)] * 10  # no face at all
    video = write_video(tmp_path / "edit.mp4", shot_a + shot_b + junk)
    out = tmp_path / "clips"
    result = run_cli("crop", video, "-o", out, "--size", "128", "--min-frames", "32")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((out / "clips.csv").open()))
    assert [r["clip"] for r in rows] == ["edit_000.mp4", "edit_001.mp4"]
    assert (int(rows[0]["start_frame"]), int(rows[0]["end_frame"])) == (0, 44)
    assert int(rows[1]["start_frame"]) == 45 and 80 <= int(rows[1]["end_frame"]) <= 84
    for row in rows:
        info = probe(out / row["clip"])
        assert (info["width"], info["height"]) == (128, 128)
        assert info["frames"] == int(row["end_frame"]) - int(row["start_frame"]) + 1
    again = run_cli("crop", video, "-o", out)
    assert_one_line_error(again, "already exists")


def test_a_clip_ends_where_its_face_was_last_seen(datasets_dir, tmp_path):
    """A face on a plain backdrop for 30 frames, then the backdrop alone (no shot change):
    the clip stops before the first detection that misses it, not a few frames later."""
    faces = first_frames(datasets_dir / "faces" / "dagan-driving.mp4", 60)
    frames = []
    for i, face in enumerate(faces):
        frame = np.full((360, 640, 3), 90, np.uint8)
        if i < 30:
            frame[100:260, 240:400] = cv2.resize(face, (160, 160), interpolation=cv2.INTER_AREA)
        frames.append(frame)
    video = write_video(tmp_path / "lost.mp4", frames)
    result = run_cli("crop", video, "-o", tmp_path / "clips", "--size", "64", "--min-frames", "8")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "clips" / "clips.csv").open()))
    assert [(int(r["start_frame"]), int(r["end_frame"])) for r in rows] == [(0, 29)]


def test_a_face_panning_across_a_wide_frame_stays_whole_in_its_clips(datasets_dir, tmp_path):
    """A face gliding from the left edge to the right of a 640x360 frame: one square over the
    whole track would need 600 px and be cut to 360, losing the face at both ends. The track
    is split instead, and every clip's box holds the face in each of its frames."""
    faces = first_frames(datasets_dir / "faces" / "dagan-driving.mp4", 60)
    frames, lefts = [], []
    for i, face in enumerate(faces):
        frame = np.full((360, 640, 3), 90, np.uint8)
        left = 8 * i  # 0 .. 472 px
        frame[100:260, left:left + 160] = cv2.resize(face, (160, 160), interpolation=cv2.INTER_AREA)
        frames.append(frame)
        lefts.append(left)
    video = write_video(tmp_path / "pan.mp4", frames)
    result = run_cli("crop", video, "-o", tmp_path / "clips", "--size", "64", "--min-frames", "8")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "clips" / "clips.csv").open()))
    assert len(rows) >= 2
    assert sum(int(r["end_frame"]) - int(r["start_frame"]) + 1 for r in rows) >= 45
    for row in rows:
        x, y, w, h = (int(row[k]) for k in "xywh")
        assert w <= 2.5 * 160  # framed, not lost in a square over the whole pan
        for index in range(int(row["start_frame"]), int(row["end_frame"]) + 1):
            # the face itself, but for what it moves after the track's last detection (<= 4
            # frames: detections are 5 frames apart) beyond the box's margin
            face_x0, face_x1 = lefts[index] + 40, lefts[index] + 120
            assert x <= face_x0 and face_x1 <= x + w, (row["clip"], index)
            assert y <= 130 and 240 <= y + h


def test_a_close_up_face_swaying_stays_one_clip(datasets_dir, tmp_path):
    """A face filling the frame's height, swaying 40 px: its square over the track outgrows
    the frame a little and is cut down, which still holds the face; no split."""
    faces = first_frames(datasets_dir / "faces" / "dagan-driving.mp4", 40)
    frames = []
    for i, face in enumerate(faces):
        frame = np.full((360, 480, 3), 90, np.uint8)
        left = 70 + int(20 * np.sin(i / 4))
        frame[:, left:left + 360] = cv2.resize(face, (360, 360), interpolation=cv2.INTER_AREA)
        frames.append(frame)
    video = write_video(tmp_path / "sway.mp4", frames)
    result = run_cli("crop", video, "-o", tmp_path / "clips", "--size", "64", "--min-frames", "8")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "clips" / "clips.csv").open()))
    assert [(int(r["start_frame"]), int(r["end_frame"])) for r in rows] == [(0, 39)]


def test_a_still_face_track_is_cropped_as_its_box():
    """The boxes of a track are crop boxes already (margin added, shifted to the forehead):
    a still face's clip is that box, not moved up a second time."""
    from monkeyanim.croptool import Track

    box = facelib.crop_box((300, 200, 100, 100), 480, 640)
    assert Track(0, 9, [box] * 3).crop(480, 640) == box


def test_crop_refuses_clips_that_would_replace_each_other_or_the_videos(datasets_dir,
                                                                       tmp_path):
    """a.mp4 and a.mkv would both write a_000.mp4; clips written into the folder of the
    videos could replace one of them (with --overwrite). Both refused before any work."""
    videos = tmp_path / "videos"
    videos.mkdir()
    frames = first_frames(datasets_dir / "faces" / "real3d-may.mp4", 10)
    write_video(videos / "a.mp4", frames)
    write_video(videos / "a_000.mp4", frames)
    result = run_cli("crop", videos, "-o", videos, "--overwrite")
    assert_one_line_error(result, f"-o {videos} is the folder of the videos themselves")
    write_video(videos / "a.mkv", frames)
    result = run_cli("crop", videos, "-o", tmp_path / "clips")
    assert_one_line_error(result, "a.mkv and a.mp4 would write clips of the same names")
    assert not (tmp_path / "clips").exists()


def test_crop_folder_goes_on_past_a_broken_video_and_keeps_its_records(datasets_dir, tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "clips"
    videos.mkdir()
    write_video(videos / "may.mp4", first_frames(datasets_dir / "faces" / "real3d-may.mp4", 34))
    (videos / "broken.mp4").write_bytes(b"garbage" * 100)  # first in order: must not stop it
    result = run_cli("crop", videos, "-o", out, "--size", "64")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "failed: broken.mp4: cannot read video" in result.stderr
    assert "1 of 2 videos cropped" in result.stdout
    result = run_cli("crop", videos / "broken.mp4", "-o", tmp_path / "none", "--size", "64")
    assert_one_line_error(result, "cannot read video")
    assert not (tmp_path / "none").exists()  # made for the clips, none written: gone again
    clips = lambda: [r["clip"] for r in csv.DictReader((out / "clips.csv").open())]  # noqa: E731
    assert clips() == ["may_000.mp4"]

    # a rerun with a new video and without --overwrite: may's clip is refused, not lost
    (videos / "broken.mp4").unlink()
    frames = first_frames(datasets_dir / "faces" / "lia-vox3.mov", 34)
    write_video(videos / "vox.mp4", [cv2.resize(f, (512, 512)) for f in frames])
    before = (out / "may_000.mp4").read_bytes()
    result = run_cli("crop", videos, "-o", out, "--size", "64")
    assert result.returncode == 1 and "may.mp4" in result.stderr and "already exists" in result.stderr
    assert clips() == ["may_000.mp4", "vox_000.mp4"]
    assert (out / "may_000.mp4").read_bytes() == before
    assert probe(out / "vox_000.mp4")["frames"] == 34

    # --skip-existing leaves out the videos clips.csv lists clips of (a clip gone: cut again)
    (out / "vox_000.mp4").unlink()
    result = run_cli("crop", videos, "-o", out, "--size", "64", "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert "may.mp4: skipped (clips.csv lists its clips)" in result.stdout
    assert "vox.mp4: 1 clip(s), 34 frames" in result.stdout
    assert clips() == ["may_000.mp4", "vox_000.mp4"]
    sources = [r["source"] for r in csv.DictReader((out / "clips.csv").open())]
    assert sources[-1] == str((videos / "vox.mp4").resolve())  # matched from any folder
    assert (out / "may_000.mp4").read_bytes() == before
    result = run_cli("crop", videos, "-o", out, "--skip-existing")  # all done: nothing to do
    assert result.returncode == 0 and result.stdout.count("skipped") == 2, result.stderr
    result = run_cli("crop", videos, "-o", out, "--skip-existing", "--overwrite")
    assert_one_line_error(result, "choose one")
    # a clips.csv that cannot be read is said before any work (it was a traceback)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "clips.csv").write_bytes(b"\xff\xfe\x00junk")
    result = run_cli("crop", videos, "-o", tmp_path / "junk", "--skip-existing")
    assert_one_line_error(result, "clips.csv cannot be read (UnicodeDecodeError)")


def test_a_stopped_crop_leaves_no_clip_of_its_video_without_its_record(tmp_path):
    """Ctrl-C after a video's first clip was finished: that clip goes too (clips.csv gets no
    row for it, and --skip-existing would have taken the video for done)."""
    from monkeyanim.croptool import Track, _write_clips

    frame = np.full((48, 48, 3), 128, np.uint8)

    def frames():
        for _ in range(12):
            yield frame
        raise KeyboardInterrupt

    clips = [(Track(0, 4, [(0, 0, 48, 48)] * 5), (0, 0, 48, 48), tmp_path / "v_000.mp4"),
             (Track(6, 30, [(0, 0, 48, 48)] * 25), (0, 0, 48, 48), tmp_path / "v_001.mp4")]
    with pytest.raises(KeyboardInterrupt):
        _write_clips(frames(), 25, clips, 32)
    assert list(tmp_path.iterdir()) == []


def test_crop_shows_progress_on_a_terminal_only(datasets_dir, tmp_path):
    video = write_video(tmp_path / "may.mp4",
                        first_frames(datasets_dir / "faces" / "real3d-may.mp4", 34))
    code, shown, stdout = run_cli_on_terminal("crop", video, "-o", tmp_path / "clips",
                                              "--size", "64", tmp_path=tmp_path)
    assert code == 0, shown
    assert "may.mp4" in shown and "━" in shown  # the bar, labelled with the video
    assert "68/" in shown  # both passes over the 34 frames counted
    assert stdout.startswith("may.mp4: 1 clip(s), 34 frames")  # results stay on stdout
    result = run_cli("crop", video, "-o", tmp_path / "again", "--size", "64")
    assert result.returncode == 0 and result.stderr == ""  # no terminal: no bar
    # no clip at all is a failure: nothing to train on, and no empty folder or clips.csv left
    result = run_cli("crop", video, "-o", tmp_path / "longer", "--size", "64", "--min-frames", "40")
    assert result.stdout == ""  # the error says it, once
    assert_one_line_error(result, "no clip cut from", "it has 34 frames, fewer than --min-frames 40")
    assert not (tmp_path / "longer").exists()
    broken = tmp_path / "broken"  # every video failing: no clips.csv of nothing, no folder
    broken.mkdir()
    (broken / "junk.mp4").write_bytes(b"not a video")
    result = run_cli("crop", broken, "-o", tmp_path / "none", "--size", "64")
    assert result.returncode == 1 and "junk.mp4" in result.stderr
    assert not (tmp_path / "none").exists()
    # -o is a folder for crop whatever the input: a file there is refused saying so
    result = run_cli("crop", video, "-o", video, "--size", "64")
    assert_one_line_error(result, "-o names the folder for the clips")
