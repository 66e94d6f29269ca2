"""The Python API refuses what would give garbage, with the library's own exceptions, on the
bundled checkpoints and real frames."""

import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import monkeyanim
from monkeyanim.checkpoint import save_checkpoint
from monkeyanim.errors import InputError, OutputError
from monkeyanim.models import Keypoints
from monkeyanim.pipeline import Animator, reconstruct
from monkeyanim.video import open_video
from monkeyanim.videowriter import VideoWriter

from conftest import ROOT, assert_one_line_error, probe, run_cli


@pytest.fixture(scope="module")
def frames():
    """The first 4 frames of the shapes example, (4, 3, 64, 64) float in [0, 1]."""
    video = open_video(ROOT / "examples" / "shapes" / "driving.mp4")
    picked = [frame for _, frame in zip(range(4), video.frames())]
    return torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).float() / 255  # (T, C, H, W)


@pytest.mark.parametrize("mistake, fragment", [
    (lambda f: f * 255, "divide 0..255 pixels by 255"),
    (lambda f: f * 2 - 1, "must be in [0, 1], got values from -"),
    (lambda f: f * float("nan"), "from nan"),
])
def test_frames_outside_0_1_are_refused(shapes, frames, mistake, fragment):
    with pytest.raises(InputError, match=fragment.replace("[", r"\[").replace(".", r"\.")):
        shapes.keypoints(mistake(frames))
    shapes.keypoints(frames.clamp(0, 1) * 1.05)  # a resize's overshoot is fine


def test_generate_names_the_argument_that_is_wrong(shapes, frames):
    kp = shapes.keypoints(frames)
    assert shapes.generate(frames[0], kp[:1], kp).frames.shape == (4, 3, 64, 64)
    assert shapes.generate(frames[:1], kp[0], kp).frames.shape == (4, 3, 64, 64)
    for args, fragment in (((frames[:2], kp[:1], kp), "source must be one image"),
                           ((frames[0].permute(1, 2, 0), kp[:1], kp), r"\(64, 64, 3\)"),
                           ((frames[0], kp[:3], kp), "kp_source means must be"),
                           ((frames[0], kp[:1], kp[0]), "kp_driving means must be"),
                           ((frames[0], kp[:1], Keypoints(kp.mean, None)), "covariances"),
                           ((frames[0], kp[:1], kp.mean), "must be Keypoints")):
        with pytest.raises(InputError, match=fragment):
            shapes.generate(*args)


def test_keypoints_that_cannot_be_keypoints_are_refused(shapes, frames):
    """Values that would give NaN or black frames without a word: empty, not finite, pixel
    coordinates, a singular covariance; float64 keypoints are cast as float64 frames are."""
    kp = shapes.keypoints(frames)
    for empty in (lambda: shapes.keypoints(frames[:0]),
                  lambda: list(reconstruct(shapes, [frames[:0]]))):
        with pytest.raises(InputError, match="holds no frames"):
            empty()
    for wrong, fragment in ((kp[:0], "with T >= 1"),
                            (Keypoints(kp.mean * float("nan"), kp.covar), "must be finite"),
                            (Keypoints((kp.mean + 1) * 32, kp.covar), r"in \[-1, 1\]"),
                            (Keypoints(kp.mean, kp.covar * 0), "positive definite"),
                            (Keypoints(kp.mean, -kp.covar), "positive definite"),  # det > 0
                            # det > 0 and a positive first entry, but no covariance: NaN frames
                            (Keypoints(kp.mean, torch.tensor([[0.01, 0.05], [0, 0.01]]).expand(
                                kp.covar.shape)), "positive definite"),
                            (Keypoints(kp.mean.numpy(), kp.covar), "Keypoints of tensors")):
        with pytest.raises(InputError, match=fragment):
            shapes.generate(frames[0], kp[:1], wrong)
    far = Keypoints(kp.mean * 4, kp.covar)  # relative motion scaled up: out of the frame
    assert float(far.mean.abs().max()) > 2
    assert shapes.generate(frames[0], kp[:1], far).frames.shape == (4, 3, 64, 64)
    as_float = shapes.generate(frames[0], kp[:1], kp).frames
    as_double = shapes.generate(frames[0], kp[:1], kp.to(torch.float64)).frames
    assert torch.equal(as_float, as_double)
    for given in (kp.mean[:1], Keypoints(kp.mean[:1, :3], kp.covar[:1, :3])):
        with pytest.raises(InputError, match="kp_driving_first"):
            Animator(shapes, frames[0], kp_driving_first=given)
    animator = Animator(shapes, frames[0], kp_driving_first=kp[0])  # (K, ...) is one frame too
    assert animator(frames).shape == (4, 3, 64, 64)
    with pytest.raises(InputError, match="kp means must be"):
        animator.set_reference(frames[1], kp=kp[1:3])


def test_frames_of_another_size_than_the_checkpoints_get_a_warning(shapes, frames):
    """They run, less well (mgif's own example: L1 0.009 at 64 px, 0.047 at 128): the warning
    points at the caller's line, not at torch's wrapper."""
    larger = torch.nn.functional.interpolate(frames, size=(128, 128), mode="bilinear")
    with pytest.warns(UserWarning, match="frames: 128x128, but this model was trained at "
                                         "64x64") as caught:
        shapes.keypoints(larger)
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shapes.keypoints(frames)


def test_the_readmes_python_examples_run_as_written(tmp_path):
    """Each ```python block of the README's Python API section, run from a folder holding the
    examples as the repository's root does."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = [part.split("```", 1)[0] for part in section.split("```python\n")[1:]]
    assert len(blocks) == 2
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for number, block in enumerate(blocks):
        script = tmp_path / f"block{number}.py"
        script.write_text(block)
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    for written in ("mine.mp4", "out.mp4", "keypoints.mp4", "tracks.json"):
        assert (tmp_path / written).stat().st_size > 0
    assert next(open_video(tmp_path / "out.mp4").frames()).shape == (64, 192, 3)  # side by side


def test_animator_takes_the_checkpoints_own_mode(frames):
    """mgif was evaluated with absolute keypoints (as in the paper): the API does as the CLI
    does unless told otherwise; a (1, 3, H, W) source is one image too."""
    mgif = monkeyanim.load_model("mgif")
    assert Animator(mgif, frames[0]).mode == "absolute"
    assert Animator(mgif, frames[:1], mode="relative").mode == "relative"
    assert Animator(monkeyanim.load_model("shapes"), frames[0]).mode == "relative"


def test_video_writer_copies_each_frame_and_checks_it(tmp_path):
    """A caller refilling one buffer gets each frame as it was when written."""
    buffer = np.zeros((64, 64, 3), np.uint8)
    with VideoWriter(tmp_path / "reuse.mp4", 25) as writer:
        for value in (0, 80, 160, 240):
            buffer[:] = value
            writer.write(buffer)
    means = [frame.mean() for frame in open_video(tmp_path / "reuse.mp4").frames()]
    assert np.allclose(means, [0, 80, 160, 240], atol=3), means
    for bad, fragment in ((np.zeros((3, 64, 64), np.uint8), "(3, 64, 64) uint8"),
                          (np.zeros((64, 64, 3), np.float32), "float32"),
                          (np.zeros((32, 32, 3), np.uint8), "a video keeps one size")):
        writer = VideoWriter(tmp_path / "bad.mp4", 25)
        writer.write(np.zeros((64, 64, 3), np.uint8))
        with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            writer.write(bad)
        writer.abort()
    assert not (tmp_path / "bad.mp4").exists()


def test_a_device_pipe_or_socket_is_never_replaced(shapes, tmp_path):
    """As root, renaming a finished file over /dev/full would turn the device into a file: a
    path that is not a regular file is refused, by the library and the CLI."""
    fifo = tmp_path / "out.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="is not a regular file"):
        save_checkpoint(shapes, fifo)
    video = tmp_path / "out.mp4"
    os.mkfifo(video)
    result = run_cli("animate", ROOT / "examples/shapes/source.png",
                     ROOT / "examples/shapes/driving.mp4", "-o", video, "--overwrite")
    assert_one_line_error(result, "is not a regular file")
    assert fifo.is_fifo() and video.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "out.safetensors"]


def test_animate_settings_are_checked_as_the_cli_checks_its_options(tmp_path):
    from monkeyanim import AnimateSettings

    assert AnimateSettings(crop="0,0,64,64").crop == (0, 0, 64, 64)  # text, as --crop takes
    for settings, fragment in ((dict(crop=(-40, 0, 32, 32)), "x, y >= 0"),
                               (dict(crop=(0, 0, 0, 32)), "w, h > 0"), (dict(size=0), "--size"),
                               (dict(fps=0), "--fps"), (dict(fps=1e6), "--fps"),
                               (dict(mode="sideways"), "unknown mode"),
                               (dict(batch_size=0), "--batch-size"),
                               # a fraction never fills a batch: the whole video went in one
                               (dict(batch_size=7.5), "whole number"),
                               (dict(refine_steps=1.5),
                                r"refine steps \(0: off\) must be a whole number"),
                               (dict(precision="fp64"), "unknown precision"),
                               (dict(paste_back=True, size=128), "--paste-back")):
        with pytest.raises(InputError, match=fragment):
            AnimateSettings(**settings)


def test_load_model_refuses_a_device_it_cannot_use():
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        monkeyanim.load_model("shapes", device="gpu")
    assert monkeyanim.load_model("shapes", device="cpu:0").device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device is available"):
            monkeyanim.load_model("shapes", device="cuda")
    assert monkeyanim.load_model("shapes", device="auto").device.type in ("cpu", "cuda")


def test_a_frame_strip_as_source_is_its_first_frame(datasets_dir, tmp_path):
    """The authors' test files are strips: as a source, the first frame, not the middle of
    the strip (half of one frame and half of the next); a 2:1 photo stays whole."""
    import cv2

    from monkeyanim.video import read_source, read_source_noted

    strip = sorted((datasets_dir / "mgif" / "test").glob("*.png"))[0]
    first = next(open_video(strip).frames())
    assert np.array_equal(read_source(strip), first)
    photo = tmp_path / "wide.png"
    cv2.imwrite(str(photo), np.zeros((100, 200, 3), np.uint8))
    assert read_source(photo).shape == (100, 200, 3)
    assert read_source_noted(photo)[1] is None
    assert "read as a frame strip" in read_source_noted(strip)[1]
    assert read_source(strip, whole=True).shape == cv2.imread(str(strip)).shape
    # judged as the picture is shown: a 4:1 strip stored on its side (EXIF orientation 6)
    # is a tall photo, kept whole without a note; a tall one stored so is a strip
    from PIL import Image

    stored = Image.fromarray(np.zeros((100, 400, 3), np.uint8))
    exif = stored.getexif()
    exif[0x0112] = 6  # shown turned a quarter clockwise
    stored.save(tmp_path / "turned.jpg", exif=exif)
    image, note = read_source_noted(tmp_path / "turned.jpg")
    assert image.shape == (400, 100, 3) and note is None
    stored.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned-wide.jpg", exif=exif)
    image, note = read_source_noted(tmp_path / "turned-wide.jpg")
    assert image.shape == (100, 100, 3) and "read as a frame strip" in note


def test_a_banner_photo_is_pasted_back_whole_and_a_strip_source_is_said(tmp_path):
    """A 4:1 photo reads as a strip of 4 frames: as the source, its first square, with a
    warning saying so; with --paste-back (whose output is the source's own picture) the whole
    of it is animated, not only its left square."""
    import cv2

    short_video = ROOT / "examples" / "shapes" / "driving.mp4"
    banner = tmp_path / "banner.png"
    cv2.imwrite(str(banner), np.tile(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None],
                                     (100, 1, 3)))
    result = run_cli("animate", banner, short_video, "-o", tmp_path / "square.mp4", "-c", "shapes")
    assert result.returncode == 0 and "read as a frame strip" in result.stderr, result.stderr
    result = run_cli("animate", banner, short_video, "-o", tmp_path / "whole.mp4", "-c", "shapes",
                     "--paste-back")
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    info = probe(tmp_path / "whole.mp4")
    assert (info["width"], info["height"]) == (400, 100)
    assert info["first"][:, 300:].mean() > 150  # the bright right end: not the left square


def test_library_calls_refuse_what_would_give_garbage_without_a_word(shapes, frames):
    """Float or 16-bit frames given to to_tensor came out near black (divided by 255 twice);
    a crop box off the frame's left cut the wrong part (negative slicing); weights cast to
    another dtype failed deep in torch; the Keypoints dataclass compared tensors with ==."""
    from monkeyanim.pipeline import to_tensor
    from monkeyanim.video import fit_frame

    image = (frames[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3)
    assert to_tensor([image]).shape == (1, 3, 64, 64)
    for wrong, fragment in (([image / 255.0], "uint8 RGB frames, got float64"),
                            ([image.astype(np.uint16)], "got uint16"),
                            ([image[..., 0]], r"got uint8 \(64, 64\)"), ([], "no frames"),
                            ([image, image[:32]], "frames of one size")):
        with pytest.raises(InputError, match=fragment):
            to_tensor(wrong)
    # what torchvision's and decord's readers give: uint8 tensors, (T, H, W, 3) or a list
    stacked = torch.from_numpy(np.stack([image, image]))
    assert torch.equal(to_tensor(stacked), to_tensor([image, image]))
    assert torch.equal(to_tensor(list(stacked)), to_tensor([image, image]))
    big = np.zeros((80, 100, 3), np.uint8)
    assert fit_frame(big, 32).shape == (32, 32, 3)  # a side: a square
    for box in (torch.tensor([0, 0, 32, 32]), np.array([0, 0, 32, 32]), [0, 0, 32, 32]):
        assert fit_frame(big, (16, 16), box).shape == (16, 16, 3)
    for box, fragment in (((-70, 0, 32, 32), "lies outside"), ((0, 0, 0, 32), "is empty"),
                          ((0.5, 0, 32, 32), "four whole numbers")):
        with pytest.raises(InputError, match=fragment):
            fit_frame(big, (32, 32), box)
    import copy
    with pytest.raises(InputError, match="keep them float32"):
        copy.deepcopy(shapes).double().keypoints(frames)
    with pytest.raises(InputError, match="no pixels"):
        shapes.keypoints(frames[:, :, :0])
    kp = shapes.keypoints(frames)
    assert kp == kp and kp != Keypoints(kp.mean.clone(), kp.covar.clone()) and hash(kp)
    with pytest.raises(ValueError, match="one or more"):
        Keypoints.cat([])
    with pytest.raises(ValueError, match="all without"):
        Keypoints.cat([kp, Keypoints(kp.mean)])


def test_the_animator_keeps_its_source_and_measures_scale_from_a_new_reference(shapes, frames):
    """A caller reusing its source tensor changed the cached source (half of it: the encoder
    features stayed); set_reference kept the motion scale of the frame before."""
    from monkeyanim.pipeline import adapt_scale

    buffer = frames[0].clone()
    animator = Animator(shapes, buffer, mode="relative")
    expected = Animator(shapes, frames[0], mode="relative")(frames)
    buffer.copy_(frames[3])
    assert torch.equal(animator(frames), expected)
    scaled = Animator(shapes, frames[0], mode="relative", scale_motion=True)
    scaled(frames)
    scaled.set_reference(frames[2])
    scaled(frames)
    kp = shapes.keypoints(frames)
    with pytest.raises(InputError, match="the mode is absolute"):  # it was left unused
        Animator(shapes, frames[0], mode="absolute", kp_driving_first=kp[0])
    assert scaled.scale == pytest.approx(adapt_scale(scaled.kp_source, kp[2:3]))
    assert scaled.scale != pytest.approx(adapt_scale(scaled.kp_source, kp[0:1]))


def test_keypoints_file_can_write_the_json_alone(shapes, tmp_path):
    """keypoints_file(model, video, None, json) wrote nothing and failed with a TypeError."""
    import json

    from monkeyanim.overlay import keypoints_file

    video = ROOT / "examples" / "shapes" / "driving.mp4"
    result = keypoints_file(shapes, video, None, tmp_path / "k.json")
    assert result.output == tmp_path / "k.json" and list(tmp_path.iterdir()) == [result.output]
    tracks = json.loads(result.output.read_text())
    assert result.frames == 32 and len(tracks["frames"]) == 32
    with pytest.raises(InputError, match="neither was named"):
        keypoints_file(shapes, video, None)


def test_a_half_precision_copy_has_the_same_keypoints_fingerprint(shapes, tmp_path):
    """predict warns when a predictor learnt another checkpoint's keypoints; a checkpoint
    saved at half precision (as training/gpu.py exports) is the same one."""
    from monkeyanim.prediction import keypoints_id

    save_checkpoint(shapes, tmp_path / "half.safetensors", half=True)
    half = monkeyanim.load_model(tmp_path / "half.safetensors")
    assert keypoints_id(half) == keypoints_id(shapes) != keypoints_id(
        monkeyanim.load_model("actions"))


def test_a_checkpoint_with_damaged_metadata_or_weights_of_another_kind_is_refused(tmp_path):
    """Provenance that is no mapping, or whose entries the code reads are of another kind,
    gave tracebacks (or 'unknown mode' for a --mode never given); int8 weights were cast to
    garbage without a word. A .SAFETENSORS file (as convert writes one) loads."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shipped = ROOT / "checkpoints" / "shapes.safetensors"
    metadata, state = safe_open(str(shipped), "pt").metadata(), load_file(shipped)
    provenance = json.loads(metadata["provenance"])
    first = next(key for key, value in state.items() if value.is_floating_point())
    cases = [({**metadata, "provenance": "[1, 2]"}, state, "a list, not a mapping"),
             ({**metadata, "provenance": json.dumps({**provenance, "default_mode": "bogus"})},
              state, "default_mode is 'bogus'"),
             ({**metadata, "provenance": json.dumps({"name": ["x"]})}, state, "name is ['x']"),
             (metadata, {**state, first: state[first].to(torch.int8)}, "wrong dtype 1")]
    for index, (meta, tensors, fragment) in enumerate(cases):
        save_file(tensors, tmp_path / f"{index}.safetensors", meta)
        with pytest.raises(monkeyanim.CheckpointError, match=re.escape(fragment)):
            monkeyanim.load_model(tmp_path / f"{index}.safetensors")
    save_file(state, tmp_path / "UPPER.SAFETENSORS", metadata)
    assert monkeyanim.load_model(str(tmp_path / "UPPER.SAFETENSORS")).config.num_kp == 4
