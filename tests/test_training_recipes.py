"""training/: the configs of the runs that span sessions, and the GPU machine's recipe
(data as small H.264 files, monkeyanim's CLI with OpenCV standing in for PyAV)."""

import dataclasses
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from safetensors import safe_open

from monkeyanim import load_model
from monkeyanim.checkpoint import load_checkpoint
from monkeyanim.models import build_model
from monkeyanim.trainconfig import load_train_config
from monkeyanim.video import fit_frame, open_video

from conftest import TINY, write_video

TRAINING = Path(__file__).resolve().parents[1] / "training"


def committed_total(name):
    """The iterations a committed run has had in all: its log's last line, third field; 0 when
    training/ holds no file of it (gpu_session.sh then starts it from scratch)."""
    if not (TRAINING / f"{name}.safetensors").exists():
        return 0
    lines = [line for line in (TRAINING / f"{name}.log").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return int(lines[-1].split()[2])  # date, iterations this session, total, ...


@pytest.mark.parametrize("name", ["mgif64", "faces128", "taichi64"])
def test_configs_build_a_model_at_their_frame_size(name):
    model_config, train_config = load_train_config(str(TRAINING / f"{name}.yaml"))
    model = build_model(model_config, with_discriminator=True).eval()
    size = model_config.frame_size
    frames = torch.rand(2, 3, *size)
    with torch.no_grad():
        kp = model.kp_detector(frames)
        out = model.generator(frames, kp, kp).frames
    assert out.shape == (2, 3, *size)
    assert train_config.checkpoint_every <= 250  # a lost machine costs little


@pytest.mark.parametrize("weights", sorted(TRAINING.glob("*.safetensors")), ids=lambda p: p.stem)
def test_committed_runs_match_their_config_and_log(weights):
    """What a session commits to carry a run on: the weights of every network (discriminator
    included) stored as float16, built from the run's own config (a run trained without the
    blend head may be committed with it, untrained, as `gpu.py export --blend` adds it), and as
    many iterations as the last line of its log counts in all."""
    model_config, _ = load_train_config(str(TRAINING / f"{weights.stem}.yaml"))
    blended = dataclasses.replace(model_config.generator, blend_source=True)
    with safe_open(str(weights), framework="pt") as handle:
        dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}
    assert dtypes - {"I64"} == {"F16"}  # batch norms' step counters stay integers
    model = load_checkpoint(weights)
    assert model.discriminator is not None
    assert dataclasses.asdict(model.config) in (
        dataclasses.asdict(model_config),
        dataclasses.asdict(dataclasses.replace(model_config, generator=blended)))
    assert model.provenance["iterations"] == committed_total(weights.stem)


def opencv_frames(path):
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return np.stack(frames)
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_gpu_recipe_trains_from_prepared_videos_without_pyav(datasets_dir, tmp_path):
    source = tmp_path / "strips"
    source.mkdir()
    strips = sorted((datasets_dir / "shapes" / "train").iterdir())[:6]
    for path in strips:
        (source / path.name).symlink_to(path)
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "prep", str(source), str(data),
                    "--size", "64", "--test", strips[0].stem, "--val", strips[1].stem],
                   check=True)
    assert [p.stem for p in (data / "test").iterdir()] == [strips[0].stem]
    assert [p.stem for p in (data / "val").iterdir()] == [strips[1].stem]
    assert len(list((data / "train").glob("*.mp4"))) == 4
    original = np.stack([fit_frame(f, (64, 64)) for f in open_video(strips[2]).frames()])
    encoded = opencv_frames(data / "train" / f"{strips[2].stem}.mp4")
    assert encoded.shape == original.shape
    assert np.abs(encoded.astype(float) - original).mean() / 255 < 0.01  # near lossless

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    # the harness replaces PyAV by an empty module: any use of it would fail the run
    result = subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "run", "train",
                             str(data), "-o", str(tmp_path / "run"), "--config", str(config),
                             "--iterations", "2", "--validate-every", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "training on 4 videos" in result.stdout + result.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
    # --best exports the run's best weights on its val/ videos instead of its latest
    subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "export", str(tmp_path / "run"),
                    str(tmp_path / "best.safetensors"), "--best"], check=True)
    best = load_model(tmp_path / "run" / "best.safetensors").provenance
    assert load_model(tmp_path / "best.safetensors").provenance == best
    assert best["val_l1"] > 0 and best["val_videos"] == [f"{strips[1].stem}.mp4"]

    # exported as committed to training/: half the size, discriminator kept, --init takes it
    exported = tmp_path / "export.safetensors"
    subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "export", str(tmp_path / "run"),
                    str(exported)], check=True)
    full, half = (load_model(p) for p in (tmp_path / "run" / "model.safetensors", exported))
    assert half.discriminator is not None and half.provenance["iterations"] == 2
    assert exported.stat().st_size < 0.6 * (tmp_path / "run" / "model.safetensors").stat().st_size
    for (name, a), b in zip(full.state_dict().items(), half.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
    result = subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "run", "train", str(data),
                             "-o", str(tmp_path / "next"), "--init", str(exported),
                             "--iterations", "1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # the carried-on run counts from 0; --previous records both runs as one training
    subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "export", str(tmp_path / "next"),
                    str(exported), "--previous", "2"], check=True)
    provenance = load_model(exported).provenance
    assert provenance["iterations"] == 3 and "initialised_from" not in provenance

    # --blend adds the blend head, untrained (an even blend), to a run trained without it;
    # a run without the head starts from that file, the head left out
    blended = tmp_path / "blended.safetensors"
    subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "export", str(tmp_path / "next"),
                    str(blended), "--blend"], check=True)
    plain, with_head = load_model(exported), load_model(blended)
    assert not plain.config.generator.blend_source and with_head.config.generator.blend_source
    head = {k: v for k, v in with_head.state_dict().items() if k.startswith("generator.blend_")}
    assert sorted(head) == ["generator.blend_mask.bias", "generator.blend_mask.weight"]
    assert all(not v.any() for v in head.values())  # zero: sigmoid(0) blends evenly
    assert with_head.provenance == load_model(tmp_path / "next" / "model.safetensors").provenance
    for name, value in plain.state_dict().items():
        assert torch.equal(value, with_head.state_dict()[name]), name
    # --blend WEIGHT: that fixed weight on the warped source (faces128 ships 0.9)
    leaning = tmp_path / "leaning.safetensors"
    subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "export", str(tmp_path / "next"),
                    str(leaning), "--blend", "0.9"], check=True)
    head = load_model(leaning).generator.blend_mask
    assert not head.weight.any()
    assert torch.sigmoid(head.bias).item() == pytest.approx(0.9, abs=1e-3)
    refused = subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "export",
                              str(tmp_path / "next"), str(leaning), "--blend", "1"],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "between 0 and 1" in refused.stderr
    result = subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "run", "train", str(data),
                             "-o", str(tmp_path / "plain"), "--config", str(config),
                             "--init", str(blended), "--iterations", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not load_model(tmp_path / "plain" / "model.safetensors").config.generator.blend_source

    # on the GPU machine monkeyanim is not installed: gpu.py imports it from its checkout
    # (-S: no site processing, so the editable install here is not seen either); nor is PyAV,
    # which an import here stands in for by failing (export once imported it through train.py)
    no_pyav = tmp_path / "no-pyav"
    no_pyav.mkdir()
    (no_pyav / "av.py").write_text("raise ImportError('no PyAV on the GPU machine')\n")
    bare = {**os.environ,
            "PYTHONPATH": os.pathsep.join([str(no_pyav), sysconfig.get_paths()["purelib"]])}
    result = subprocess.run([sys.executable, "-S", str(TRAINING / "gpu.py"), "export",
                             str(tmp_path / "next"), str(tmp_path / "bare.safetensors")],
                            capture_output=True, text=True, env=bare, cwd=tmp_path)
    assert result.returncode == 0 and (tmp_path / "bare.safetensors").is_file(), result.stderr


def test_gpu_session_carries_runs_on_from_their_committed_totals(datasets_dir, tmp_path):
    source, data = tmp_path / "strips", tmp_path / "data"
    source.mkdir()
    strips = sorted((datasets_dir / "shapes" / "train").iterdir())[:4]
    for path in strips:
        (source / path.name).symlink_to(path)
    subprocess.run([sys.executable, str(TRAINING / "gpu.py"), "prep", str(source), str(data),
                    "--size", "64", "--test", strips[0].stem, "--val", strips[1].stem],
                   check=True)
    out = tmp_path / "out"
    out.mkdir()
    # python3 on PATH is this interpreter, as on the GPU machine; one iteration per call
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "OUT": str(out), "RUNS": str(tmp_path / "runs"), "DEVICE": "cpu", "MINUTES": "0",
           "TRAIN_OPTIONS": "--batch-size 2 --workers 1", "VALIDATE_EVERY": "1",
           "FACES_DATA": str(data), "MGIF_DATA": str(data), "TAICHI_DATA": str(data),
           "RUNS_LIST": "faces128 mgif64 taichi64 taichi64-scratch",
           "TAICHI_SCRATCH_DATA": str(data)}
    script = str(TRAINING / "gpu_session.sh")
    for call, extra in ((1, {}), (2, {"RESUME": "1", "MGIF_DROP_LR": "2e-6"})):
        subprocess.run(["bash", script], env={**env, **extra}, cwd=TRAINING.parent, check=True,
                       capture_output=True)
        for name in ("faces128", "mgif64", "taichi64"):
            log = (out / f"{name}.log").read_text()
            # a run with no committed file starts from scratch at 0, even with a log (mgif64's
            # file left training/ once bundled; its log stays as the record)
            total = committed_total(name)
            assert f"iterations {call - 1} -> {40000 - total}," in log, log
            provenance = load_model(out / f"{name}.safetensors").provenance
            assert provenance["iterations"] == total + call
            assert "initialised_from" not in provenance
            # validated: the best (here the start or one of the iterations) goes out too
            best = load_model(out / f"{name}-best.safetensors").provenance
            assert best["iterations"] in range(total, total + call + 1) and best["val_l1"] > 0
        # NAME-scratch starts NAME from scratch beside its committed file
        log = (out / "taichi64-scratch.log").read_text()
        assert f"iterations {call - 1} -> 40000," in log, log
        scratch = load_model(out / "taichi64-scratch.safetensors").provenance
        assert scratch["iterations"] == call and "initialised_from" not in scratch
    taichi = load_model(out / "taichi64.safetensors")
    assert taichi.provenance["body_model"] is True
    # taichi64 and faces128 train without the blend head and go out with it, as committed
    # (taichi64 an even blend, faces128 0.9 on the warped source); mgif64 as it is
    assert taichi.config.generator.blend_source
    for name, weight in (("taichi64", 0.5), ("faces128", 0.9)):
        head = load_model(out / f"{name}.safetensors").generator.blend_mask
        assert torch.sigmoid(head.bias).item() == pytest.approx(weight, abs=1e-3), name
    assert not load_model(out / "mgif64.safetensors").config.generator.blend_source
    # the drop arm branched from mgif64's run folder after the first call
    log = (out / "mgif64-drop.log").read_text()
    assert f"iterations 1 -> {40000 - committed_total('mgif64')}," in log, log
    for run, lr in (("mgif64", 2e-5), ("mgif64-drop", 2e-6)):
        state = torch.load(tmp_path / "runs" / run / "state.pt", weights_only=True)
        assert state["optimizers"]["generator"]["param_groups"][0]["lr"] == pytest.approx(lr)


def test_oracle_flow_rebuilds_a_pan_and_leaves_a_still_clip_still(face_frames, tmp_path):
    """training/oracle_flow.py on real face pixels: a camera pan (a window sliding 4 px a
    frame over the 512 px frame) is rebuilt from its first frame far better than the static
    source does; a still clip scores zero both ways (exactly, as lossless frames, where the
    ratio has nothing to divide by)."""
    first = face_frames[0]
    pan = [first[32:416, 4 * i:384 + 4 * i] for i in range(12)]  # (384, 384, 3) each
    folder = tmp_path / "test"
    folder.mkdir()
    write_video(folder / "pan.mp4", pan)
    write_video(folder / "still.mp4", [first[32:416, :384]] * 6)
    (folder / "still-png").mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / "still-png" / f"{i:02d}.png"), first[32:416, :384])
    result = subprocess.run([sys.executable, str(TRAINING / "oracle_flow.py"), str(tmp_path),
                             "--size", "128"], capture_output=True, text=True, check=True)
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    frames, static, oracle, _ = rows["pan.mp4"]
    assert int(frames) == 12 and float(oracle) < 0.3 * float(static) and float(static) > 0.02
    assert float(rows["still.mp4"][1]) < 0.002 and float(rows["still.mp4"][2]) < 0.002
    assert rows["still-png"] == ["3", "0.0000", "0.0000", "-"]
    static_mean, oracle_mean = (float(x) for x in rows["mean"][:2])
    assert static_mean == pytest.approx((float(static) + float(rows["still.mp4"][1])) / 3, abs=1e-4)
    assert oracle_mean < static_mean
