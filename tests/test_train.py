"""`monkeyanim train` on a slice of the authors' shapes: learning, resuming, DDP, bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import monkeyanim
from monkeyanim.data import PairDataset

from conftest import (ROOT, TINY, assert_one_line_error, run_cli, run_ddp_worker,
                      sigint_default, torchrun, write_video)


def reconstruction_l1(model_path, data) -> float:
    """Mean L1 of reconstructing frame 16 of each test video from frame 0 (pixels in [0, 1])."""
    model = monkeyanim.load_model(model_path)
    test = PairDataset(data / "test", model.config.frame_size)
    errors = []
    for index in range(len(test.videos)):
        frames = torch.from_numpy(test.frames(index)[[0, 16]]).permute(0, 3, 1, 2).float() / 255
        kp = model.keypoints(frames)
        predicted = model.generate(frames[0], kp[:1], kp[1:]).frames
        errors.append((predicted - frames[1:]).abs().mean().item())
    return sum(errors) / len(errors)


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_training_lowers_reconstruction_loss(shapes_slice, tiny_config, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", shapes_slice, "-o", run, "--config", tiny_config, "--iterations", "10",
                     "--seed", "1", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "iterations 0 -> 10, lr drops at [5]" in result.stdout  # half way, as the preset's
    early = reconstruction_l1(run / "model.safetensors", shapes_slice)
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", "60",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    # a longer resumed run keeps the drop it made, and says so (it once claimed one at 30)
    assert "iterations 10 -> 60, lr dropped at [5]\n" in result.stdout
    late = reconstruction_l1(run / "model.safetensors", shapes_slice)
    assert late < early * 0.95, (early, late)
    log = read_log(run)
    assert [r["iteration"] for r in log] == list(range(1, 61))
    assert {r["lr"] for r in log[5:]} == {log[0]["lr"] / 10}
    first, last = log[:5], log[-5:]
    mean = lambda rows: sum(r["feature_matching"] for r in rows) / len(rows)
    assert mean(last) < mean(first)
    assert (run / "samples" / "0000060.png").is_file()
    model = monkeyanim.load_model(run / "model.safetensors")
    assert model.provenance["iterations"] == 60 and model.discriminator is not None


def train_until_saved(shapes_slice, tiny_config, run, *options, **popen) -> subprocess.Popen:
    """A 1,000-iteration run started in the background, returned once it has saved a
    checkpoint and run on for a second."""
    process = subprocess.Popen(
        [sys.executable, "-m", "monkeyanim", "train", str(shapes_slice), "-o", str(run),
         "--config", str(tiny_config), "--iterations", "1000", "--checkpoint-every", "5",
         *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, **popen)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "state.pt").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    return process


def test_resume_after_interruption(shapes_slice, tiny_config, tmp_path):
    run = tmp_path / "run"
    process = train_until_saved(shapes_slice, tiny_config, run)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    saved = torch.load(run / "state.pt", weights_only=True)["iteration"]
    # Ctrl-C lets the iteration under way finish and saves it: no work is lost
    assert saved > 5 and saved == read_log(run)[-1]["iteration"]
    assert f"stopped at iteration {saved} of 1000 (interrupted)" in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert monkeyanim.load_model(run / "model.safetensors").provenance["iterations"] == saved
    assert (run / "samples" / f"{saved:07d}.png").is_file()
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", str(saved + 3),
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert f"iterations {saved} -> {saved + 3}" in result.stdout
    iterations = [r["iteration"] for r in read_log(run)]
    assert iterations[-3:] == [saved + 1, saved + 2, saved + 3]
    # starting over in a used run folder is refused rather than overwriting it
    result = run_cli("train", shapes_slice, "-o", run, "--config", tiny_config)
    assert_one_line_error(result, "--resume")


def test_a_second_interrupt_stops_at_once_with_loader_workers(shapes_slice, tiny_config,
                                                               tmp_path):
    """The second of two interrupts (here Ctrl-C and a kill that wait while the trainer is
    stopped, so both arrive together, in order) stops at once: the loader workers, which
    ignore SIGTERM, are shut down rather than waited on at exit; the run resumes."""
    run = tmp_path / "run"
    process = train_until_saved(shapes_slice, tiny_config, run, "--workers", "2")
    process.send_signal(signal.SIGSTOP)
    process.send_signal(signal.SIGINT)  # two different signals: pending, neither absorbs the other
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in stderr, stderr  # the kill's code
    assert "interrupted again: stopped at once" in stderr
    saved = torch.load(run / "state.pt", weights_only=True)["iteration"]
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", str(saved + 1),
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr


def test_model_and_state_are_saved_as_a_pair(shapes_slice, tiny_config, tmp_path):
    """A save that fails half-way (here the disk takes the 1.4 MB model but not the 2.9 MB
    optimizer state) leaves the previous model and state, which --resume takes."""
    run = tmp_path / "run"
    env = {"OMP_NUM_THREADS": "1"}
    result = run_cli("train", shapes_slice, "-o", run, "--config", tiny_config, "--iterations",
                     "10", env=env)
    assert result.returncode == 0, result.stderr
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", "20",
                     env=env, max_file_bytes=2_000_000)
    assert_one_line_error(result, f"cannot write {run / 'state.pt'}", "File too large")
    assert monkeyanim.load_model(run / "model.safetensors").provenance["iterations"] == 10
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == 10
    assert [path.name for path in run.glob(".*")] == [".lock"]  # no temp file left
    result = run_cli("train", shapes_slice, "-o", run, "--resume", env=env)
    assert result.returncode == 0, result.stderr
    assert "iterations 10 -> 20" in result.stdout  # the --iterations of the failed resume


def test_resume_keeps_what_the_command_line_changed(shapes_slice, tiny_config, tmp_path):
    """--iterations given with --resume is written back to config.json, so the next --resume
    carries on to it; --config with --resume brings its training settings, and is refused
    for another network."""
    run = tmp_path / "run"
    env = {"OMP_NUM_THREADS": "1"}
    assert run_cli("train", shapes_slice, "-o", run, "--config", tiny_config, "--iterations",
                   "2", env=env).returncode == 0
    assert run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", "3",
                   env=env).returncode == 0
    result = run_cli("train", shapes_slice, "-o", run, "--resume", env=env)
    assert "iterations 3 -> 3" in result.stdout, result.stdout + result.stderr
    longer = tmp_path / "longer.yaml"
    longer.write_text(TINY.replace("iterations: 40", "iterations: 5"))
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--config", longer, env=env)
    assert result.returncode == 0 and "iterations 3 -> 5" in result.stdout, result.stderr
    assert [r["iteration"] for r in read_log(run)][-2:] == [4, 5]
    config = (run / "config.json").read_text()  # an end behind the run: refused, kept as it was
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", "4", env=env)
    assert_one_line_error(result, "is at iteration 5, past the 4 asked for")
    assert (run / "config.json").read_text() == config
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--config", "shapes")
    assert_one_line_error(result, "--config shapes describes another network", "--init")
    # a run started from --init's weights with a preset resumes with that preset, as the
    # preset gave it its training settings alone (the README's --init mgif --config moving-gif)
    tuned, short = tmp_path / "tuned", ("--iterations", "1", "--batch-size", "2")
    assert run_cli("train", shapes_slice, "-o", tuned, "--init", run / "model.safetensors",
                   "--config", "shapes", *short, env=env).returncode == 0
    result = run_cli("train", shapes_slice, "-o", tuned, "--resume", "--config", "shapes",
                     "--iterations", "2", "--batch-size", "2", env=env)
    assert result.returncode == 0 and "iterations 1 -> 2" in result.stdout, result.stderr


def test_a_damaged_or_mismatched_run_folder_is_refused_on_resume(shapes_slice, tiny_config,
                                                                 tmp_path):
    """--resume reads model.safetensors, state.pt and config.json: each one damaged, missing
    or from another network is one line naming it, and the run folder is left as it was."""
    import shutil

    env = {"OMP_NUM_THREADS": "1"}
    base, other = tmp_path / "base", tmp_path / "other"
    assert run_cli("train", shapes_slice, "-o", base, "--config", tiny_config, "--iterations",
                   "2", env=env).returncode == 0
    wider = tmp_path / "wider.yaml"  # the same preset, another width
    wider.write_text(Path(tiny_config).read_text().replace("block_expansion: 8", "block_expansion: 4"))
    assert run_cli("train", shapes_slice, "-o", other, "--config", wider, "--iterations", "2",
                   env=env).returncode == 0
    state = (base / "state.pt").read_bytes()
    cases = {"state.pt": (state[:len(state) // 2], "state.pt is damaged or not a monkeyanim"),
             "config.json": (b"{", "config.json is damaged"),  # (lost: the way out, without)
             "model.safetensors": ((other / "model.safetensors").read_bytes(),
                                   "holds another network than its config.json")}
    for name, (damage, message) in cases.items():
        run = tmp_path / f"bad-{name}"
        shutil.copytree(base, run)
        (run / name).write_bytes(damage)
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", "4",
                         env=env)
        assert_one_line_error(result, message, "in another folder from its weights")
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    run = tmp_path / "foreign-state"
    shutil.copytree(base, run)
    torch.save({"a": 1}, run / "state.pt")
    result = run_cli("train", shapes_slice, "-o", run, "--resume", env=env)
    assert_one_line_error(result, "is not a monkeyanim training state")
    shutil.copy(other / "state.pt", run / "state.pt")  # Adam's moments of another network
    result = run_cli("train", shapes_slice, "-o", run, "--resume", env=env)
    assert_one_line_error(result, "state.pt was saved for another network")
    (run / "config.json").unlink()
    result = run_cli("train", shapes_slice, "-o", run, "--resume", env=env)
    assert_one_line_error(result, "config.json (the run's settings) is missing",
                          f"in another folder from its weights: -o NEW_DIR --init "
                          f"{run / 'model.safetensors'}")
    assert not (run / "config.json").exists()


def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(shapes_slice, tiny_config,
                                                                    tmp_path):
    """A loss that turns NaN (here an absurd learning rate) stops the run with one line and
    exit code 1, before a checkpoint of NaN weights replaces the good one; a checkpoint that
    holds NaN weights anyway is refused instead of animating black frames."""
    run = tmp_path / "run"
    result = run_cli("train", shapes_slice, "-o", run, "--config", tiny_config, "--iterations",
                     "40", "--checkpoint-every", "1", "--lr", "1e9",
                     env={"OMP_NUM_THREADS": "1"})
    assert_one_line_error(result, "training diverged at iteration", "a lower --lr")
    model = monkeyanim.load_model(run / "model.safetensors")
    assert all(p.isfinite().all() for p in model.parameters())
    diverged_at = int(result.stderr.split("iteration ")[1].split()[0])
    assert model.provenance["iterations"] < diverged_at
    # nothing saved yet: the advice is to start again, not a --resume that cannot work
    result = run_cli("train", shapes_slice, "-o", tmp_path / "early", "--config", tiny_config,
                     "--iterations", "40", "--lr", "1e9", env={"OMP_NUM_THREADS": "1"})
    assert_one_line_error(result, "nothing was saved; start again with a lower --lr")
    # under torchrun every rank stops, each naming the checkpoint rank 0 saved
    result = subprocess.run(
        [*torchrun(2), "-m", "monkeyanim", "train", str(shapes_slice), "-o", str(tmp_path / "ddp"),
         "--config", str(tiny_config), "--iterations", "40", "--checkpoint-every", "1", "--lr",
         "1e9"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 2, result.stderr
    assert len(set(errors)) == 1 and "is kept" in errors[0], errors
    for p in model.parameters():
        p.data.fill_(float("nan"))
        break
    monkeyanim.save_checkpoint(model, tmp_path / "nan.safetensors")
    with pytest.raises(monkeyanim.CheckpointError, match="not finite numbers"):
        monkeyanim.load_model(tmp_path / "nan.safetensors")


def test_a_run_folder_among_its_own_videos_is_refused(shapes_slice, tiny_config, tmp_path):
    """Its sample images would be read as a video (a folder of frames) on the next resume."""
    for data, run in ((shapes_slice / "train", shapes_slice / "train"),
                      (shapes_slice / "train", shapes_slice / "train" / "run"),
                      (shapes_slice, shapes_slice / "train" / "runs" / "1")):
        result = run_cli("train", data, "-o", run, "--config", tiny_config)
        assert_one_line_error(result, f"run folder {run} is inside",
                              "choose a folder outside it")
    assert not (shapes_slice / "train" / "run").exists()
    assert not (shapes_slice / "train" / "runs").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_whole_job_stops_with_a_checkpoint(signum, shapes_slice, tiny_config,
                                                         tmp_path):
    """A job scheduler's SIGTERM (or Ctrl-C in a terminal) reaches every process of the job,
    data loader workers included: the run must still finish its iteration and save it, and
    exit with the signal's code, 143 or 130 (a SIGTERM was said as an interruption, 130)."""
    run = tmp_path / "run"
    process = train_until_saved(shapes_slice, tiny_config, run, "--workers", "2",
                                start_new_session=True)
    os.killpg(process.pid, signum)  # the process group: the trainer and its loader workers
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    saved = torch.load(run / "state.pt", weights_only=True)["iteration"]
    assert saved > 5 and saved == read_log(run)[-1]["iteration"]
    said = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert f"stopped at iteration {saved} of 1000 ({said})" in stderr


def test_max_minutes_stops_with_a_checkpoint(shapes_slice, tiny_config, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", shapes_slice, "-o", run, "--config", tiny_config,
                     "--max-minutes", "0", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "stopped at iteration 1 of 40 (--max-minutes reached)" in result.stdout
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == 1
    # the iteration a stop saves is logged, whatever log_every is (the log was empty), and
    # printed (the last line said the iteration before)
    sparse = tmp_path / "sparse.yaml"
    sparse.write_text(tiny_config.read_text().replace("log_every: 1", "log_every: 10"))
    result = run_cli("train", shapes_slice, "-o", tmp_path / "run10", "--config", sparse,
                     "--max-minutes", "0", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert [r["iteration"] for r in read_log(tmp_path / "run10")] == [1]
    assert re.search(r"^it 1/40 ", result.stdout, re.MULTILINE), result.stdout
    # --lr on resuming sets the rate from there on (the saved optimizer state holds the old one)
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", "2",
                     "--lr", "3e-5", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "iterations 1 -> 2" in result.stdout and "done: 2 iterations" in result.stdout
    assert [r["lr"] for r in read_log(run)] == [2e-4, 3e-5]
    for option, value in (("--lr", "0"), ("--lr", "nan"), ("--lr", "inf"), ("--lr", "1e39"),
                          ("--max-minutes", "-1"), ("--max-minutes", "nan")):
        assert_one_line_error(run_cli("train", shapes_slice, "-o", run, "--resume", option,
                                      value), f"{option} must be")
    # (99999 loader processes filled the memory, and a batch of 1e8 pairs; 1e39 overflowed)
    for option, value, setting in (("--workers", "99999", "num_workers"),
                                   ("--batch-size", "99999999", "batch_size")):
        assert_one_line_error(run_cli("train", shapes_slice, "-o", run, "--resume", option,
                                      value), f"{setting} must be at most")


def test_validation_keeps_the_best_weights_on_held_out_videos(shapes_slice, tiny_config,
                                                             tmp_path):
    """--validate-every measures the reconstruction L1 on DATA/val/ as `evaluate` does, and
    best.safetensors holds the best weights so far, across a resumed run too."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train").symlink_to(shapes_slice / "train")
    (data / "val").mkdir()
    for path in sorted((shapes_slice / "test").iterdir())[:3]:
        (data / "val" / path.name).symlink_to(path)
    run, env = tmp_path / "run", {"OMP_NUM_THREADS": "1"}
    result = run_cli("train", data, "-o", run, "--config", tiny_config, "--iterations", "9",
                     "--validate-every", "4", "--seed", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert "validating on 3 held-out videos every 4 iterations" in result.stdout
    result = run_cli("train", data, "-o", run, "--resume", "--iterations", "14", env=env)
    assert result.returncode == 0, result.stderr
    measured = {r["iteration"]: r["val_l1"] for r in read_log(run) if "val_l1" in r}
    # the start, every 4th, and where each call ended
    assert sorted(measured) == [0, 4, 8, 9, 12, 14]
    assert len(set(measured.values())) == 6  # the weights changed between measures
    best_at = min(measured, key=measured.get)
    assert f"best held-out L1 {measured[best_at]:.4f} at iteration {best_at}" in result.stdout
    best = monkeyanim.load_model(run / "best.safetensors")
    assert best.provenance["iterations"] == best_at
    assert best.provenance["val_l1"] == pytest.approx(measured[best_at], abs=1e-6)
    assert best.discriminator is not None  # a run can go on from it with --init
    # the same number as `monkeyanim evaluate` on those videos (each under 64 frames)
    report = tmp_path / "report.json"
    result = run_cli("evaluate", data / "val", "-c", run / "best.safetensors", "--json", report)
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["l1"] == pytest.approx(measured[best_at], abs=1e-5)
    # without a val/ folder: one line, before anything is written
    result = run_cli("train", shapes_slice, "-o", tmp_path / "none", "--config", tiny_config,
                     "--validate-every", "5")
    assert_one_line_error(result, "val")
    assert not (tmp_path / "none").exists()


def test_held_out_videos_keep_frames_spread_from_the_first(shapes_slice):
    from monkeyanim.validation import HeldOut

    whole = PairDataset(shapes_slice / "test", (64, 64))
    held_out = HeldOut(shapes_slice / "test", (64, 64), frames_per_video=5)
    assert held_out.names == [path.name for path in whole.videos]
    for index, frames in enumerate(held_out.videos):
        original = whole.frames(index)  # 32 frames each
        assert np.array_equal(frames, original[[0, 8, 16, 23, 31]])


def test_ddp_two_processes_end_identical(shapes_slice, tiny_config, tmp_path):
    """Four DDP iterations planned; rank 1 alone asks to stop after the second (as a
    signal reaching one process would): both ranks stop there, save, and agree. Rank 0
    alone validates on val/ meanwhile."""
    run, data = tmp_path / "ddp", tmp_path / "data"
    (data / "val").mkdir(parents=True)
    (data / "train").symlink_to(shapes_slice / "train")
    for path in sorted((shapes_slice / "test").iterdir())[:2]:
        (data / "val" / path.name).symlink_to(path)
    config = tmp_path / "ddp.yaml"
    config.write_text(TINY.replace("iterations: 40", "iterations: 4, validate_every: 1"))
    rank0, rank1 = run_ddp_worker(data, run, config, "2")
    fresh = monkeyanim.build_model(monkeyanim.load_model(run / "model.safetensors").config)
    moved = 0
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key
        moved += not torch.equal(value, fresh.state_dict()[key])
    assert moved > 0  # they trained, not just started equal
    log = read_log(run)
    assert [r["iteration"] for r in log] == [0, 1, 2]  # rank 0 alone logs
    assert all("val_l1" in r for r in log) and (run / "best.safetensors").is_file()
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == 2


def test_ddp_ranks_agree_when_the_discriminator_trains_the_keypoints(shapes_slice, tmp_path):
    """With detach_kp_discriminator false, the discriminator's loss reaches the keypoint
    detector in a second backward, whose gradients DDP does not average: each process's
    detector drifted apart (42 tensors differed after 4 iterations)."""
    run = tmp_path / "ddp"
    config = tmp_path / "ddp.yaml"
    config.write_text(TINY.replace("iterations: 40", "iterations: 2, "
                                   "detach_kp_discriminator: false"))
    rank0, rank1 = run_ddp_worker(shapes_slice, run, config)
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key


def processes_running(text: str) -> list[int]:
    """The ids of the processes whose command line holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode():
                found.append(int(entry.name))
        except OSError:  # it ended meanwhile
            continue
    return found


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_under_torchrun(presses, shapes_slice, tiny_config, tmp_path):
    """`torchrun ... -m monkeyanim train`: Ctrl-C reaches torchrun alone (its workers run in
    their own sessions), which passes SIGINT on. The workers finish the iteration and save it;
    a second Ctrl-C (torchrun then sends SIGTERM) stops them at once with the last checkpoint
    whole. Either way no worker is left behind and the run resumes."""
    run = tmp_path / "run"
    process = subprocess.Popen(
        [*torchrun(2), "-m", "monkeyanim", "train", str(shapes_slice), "-o", str(run),
         "--config", str(tiny_config), "--iterations", "1000", "--checkpoint-every", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "state.pt").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    for _ in range(presses):
        process.send_signal(signal.SIGINT)
        time.sleep(0.15)  # torchrun passes it on within milliseconds; an iteration takes 0.4 s
    _, stderr = process.communicate(timeout=90)
    assert process.returncode != 0
    time.sleep(1.0)  # the workers' exit is seen by torchrun first
    assert processes_running(str(run)) == []
    saved = torch.load(run / "state.pt", weights_only=True)["iteration"]
    assert monkeyanim.load_model(run / "model.safetensors").provenance["iterations"] == saved
    if presses == 1:
        assert saved > 5 and saved == read_log(run)[-1]["iteration"]
        assert f"stopped at iteration {saved} of 1000 (interrupted)" in stderr
    else:
        assert saved >= 5 and "interrupted again: stopped at once" in stderr
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations",
                     str(saved + 1), env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr


def test_short_videos_are_skipped_with_a_warning(shapes_slice, face_frames, tiny_config, tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for name in sorted(p.name for p in (shapes_slice / "train").iterdir())[:8]:
        (data / "train" / name).symlink_to(shapes_slice / "train" / name)
    write_video(data / "train" / "still.mp4", face_frames[:1])
    write_video(data / "train" / "still2.mp4", face_frames[1:2])
    (data / "train" / "junk.mp4").write_bytes(b"nothing")
    result = run_cli("train", data, "-o", tmp_path / "run", "--config", tiny_config,
                     "--iterations", "1")
    assert result.returncode == 0, result.stderr
    assert "skipped 2 video(s) shorter than 2 frames (an image is one frame, unless it is a " \
        "strip as wide as a whole number of its height), first: still.mp4" in result.stderr
    assert "skipped 1 unreadable file(s)" in result.stderr


def test_a_plain_folder_of_videos_trains_and_a_split_without_train_is_refused(
        shapes_slice, tiny_config, face_frames, tmp_path):
    data = tmp_path / "videos"  # no train/ in it: the videos themselves are the training set
    data.mkdir()
    for name in sorted(p.name for p in (shapes_slice / "train").iterdir())[:5]:
        (data / name).symlink_to(shapes_slice / "train" / name)
    result = run_cli("train", data, "-o", tmp_path / "run", "--config", tiny_config,
                     "--iterations", "1")
    assert result.returncode == 0, result.stderr
    assert "training on 5 videos" in result.stdout
    (data / "test").mkdir()  # a split, half made: its test/ must not be read as a video
    assert_one_line_error(run_cli("train", data, "-o", tmp_path / "run2", "--config",
                                  tiny_config), "has test/ but no train/ folder")
    # videos sorted into a folder per person: a subfolder is one video's frames, and says so
    by_person = tmp_path / "by-person" / "train" / "alice"
    by_person.mkdir(parents=True)
    write_video(by_person / "a.mp4", [frame[::8, ::8] for frame in face_frames[:4]])
    result = run_cli("train", by_person.parents[1], "-o", tmp_path / "run3", "--config",
                     tiny_config)
    assert_one_line_error(result, "no readable video", "alice holds videos")


BAD_OPTIONS = [(["--batch-size", "0"], "batch_size"), (["--iterations", "0"], "iterations"),
               (["--workers", "-1"], "num_workers"), (["--checkpoint-every", "0"], "checkpoint_every"),
               (["--sample-every", "-5"], "sample_every"), (["--device", "tpu"], "unknown device"),
               (["--validate-every", "-1"], "validate_every"),
               (["--precision", "fp8"], "unknown precision")]
if not torch.cuda.is_available():
    BAD_OPTIONS += [(["--device", "cuda"], "no CUDA device"),
                    (["--precision", "fp16"], "fp16 needs a CUDA device")]


@pytest.mark.parametrize("options,message", BAD_OPTIONS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_bad_options_are_refused_before_anything_is_written(options, message, shapes_slice,
                                                            tmp_path):
    run = tmp_path / "runs" / "run"
    assert_one_line_error(run_cli("train", shapes_slice, "-o", run, *options), message)
    assert not (tmp_path / "runs").exists()


def test_a_frame_too_small_for_the_discriminator_is_refused_before_training(shapes_slice,
                                                                            tmp_path):
    config = tmp_path / "small.yaml"  # the networks fit 32 px; the 4-block discriminator not
    config.write_text("model: {frame_size: [32, 32], kp_detector: {num_blocks: 3}, generator: "
                      "{num_blocks: 3, dense_motion: {num_blocks: 3}}}\n")
    result = run_cli("train", shapes_slice, "-o", tmp_path / "runs" / "run", "--config", config)
    assert_one_line_error(result, "discriminator: a frame side of 32 px is too small")
    assert not (tmp_path / "runs").exists()
    # a network of other than RGB frames (a traceback after "training on"), a config that is
    # no text (UnicodeDecodeError), an infinite rate (refused as --lr inf is)
    for text, message in ((b"model: {num_channels: 1}\n", "num_channels must be 3"),
                          (b"\xff\xfe\x00bad", "it is not text"),
                          (b"train: {lr: .inf}\n", "lr")):
        config.write_bytes(text)
        result = run_cli("train", shapes_slice, "-o", tmp_path / "runs" / "run", "--config",
                         config)
        assert_one_line_error(result, message)
        assert not (tmp_path / "runs").exists()


def test_the_readme_yaml_example_loads_as_written(tmp_path):
    from monkeyanim.trainconfig import load_train_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    config = tmp_path / "example.yaml"
    config.write_text(readme.split("```yaml\n", 1)[1].split("```", 1)[0])
    model, train = load_train_config(str(config))
    assert model.kp_detector.block_expansion == 8
    assert (train.batch_size, train.iterations, train.lr) == (8, 2000, 1e-4)


def test_yaml_numbers_without_a_dot_and_bad_settings_in_a_config_file(tmp_path):
    from monkeyanim.errors import ConfigError
    from monkeyanim.trainconfig import load_train_config

    config = tmp_path / "run.yaml"
    config.write_text("train: {lr: 3e-4, reconstruction_deformed: 1E1, seed: 7}\n")
    _, train = load_train_config(str(config))  # PyYAML alone reads 3e-4 as a string
    assert (train.lr, train.reconstruction_deformed, train.seed) == (3e-4, 10.0, 7)
    for text, message in (("train: {batch_size: 0}", "batch_size"), ("train: {lr: fast}", "lr"),
                          ("train: {nosuch: 1}", "unknown setting train.nosuch")):
        config.write_text(text + "\n")
        with pytest.raises(ConfigError, match=message) as error:
            load_train_config(str(config))
        assert str(error.value).startswith(f"{config}: ")


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable", "run-dir", "under-file", "config",
                                  "resume"])
def test_bad_input(case, tiny_config, tmp_path):
    data, run, config = tmp_path / "data", tmp_path / "run", str(tiny_config)
    expect = []
    if case == "missing":
        expect = ["not found"]
    elif case == "empty":
        (data / "train").mkdir(parents=True)
        expect = ["holds no videos"]
    elif case == "unreadable":
        (data / "train").mkdir(parents=True)
        (data / "train" / "a.mp4").write_bytes(b"junk")
        expect = ["no readable video"]
    elif case == "run-dir":
        (data / "train").mkdir(parents=True)
        run = tmp_path / "file"
        run.write_text("x")
        expect = ["run folder"]
    elif case == "under-file":
        (data / "train").mkdir(parents=True)
        (tmp_path / "file").write_text("x")
        run = tmp_path / "file" / "runs" / "run"
        expect = ["run folder cannot be created", "is a file"]
    elif case == "config":
        config, expect = "nope", ["unknown config", "shapes"]
    else:
        (data / "train").mkdir(parents=True)
        expect = ["nothing to resume"]
    args = ["train", data, "-o", run, "--config", config] + (["--resume"] if case == "resume" else [])
    assert_one_line_error(run_cli(*args), *expect)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda(shapes_slice, tiny_config, tmp_path):
    """A run saved on a GPU carries on there (the saved RNG state stays a CPU tensor)."""
    run = tmp_path / "run"
    for extra in ([], ["--resume"]):
        result = run_cli("train", shapes_slice, "-o", run, "--config", tiny_config, "--device",
                         "cuda", "--iterations", "4" if extra else "2", *extra)
        assert result.returncode == 0, result.stderr
    assert [r["iteration"] for r in read_log(run)] == [1, 2, 3, 4]


def test_init_fine_tunes_a_bundled_checkpoint(shapes_slice, tmp_path):
    """--init shapes: the run takes the checkpoint's architecture and weights (a fresh
    discriminator, since the bundled file has none) and moves on from there."""
    run = tmp_path / "runs" / "tuned"  # missing parents are made, as mkdir -p would
    result = run_cli("train", shapes_slice, "-o", run, "--config", "shapes", "--init", "shapes",
                     "--iterations", "2", "--batch-size", "4", "--subject", "body", "--lr", "1e-5",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    start, tuned = monkeyanim.load_model("shapes"), monkeyanim.load_model(run / "model.safetensors")
    assert tuned.provenance["initialised_from"] == "shapes" and tuned.discriminator is not None
    # what the weights are for carries over; --subject names one kind of subject
    assert tuned.provenance["body_model"] and tuned.provenance["face_model"] is False
    assert tuned.provenance["default_mode"] == start.provenance["default_mode"]
    fresh = monkeyanim.models.build_model(start.config)
    weights = dict(start.named_parameters())
    drift = lambda model: max((p - weights[k]).abs().max().item()
                              for k, p in model.named_parameters() if k in weights)
    # two Adam steps of about --lr each (the preset's 2e-4 would move them ~4e-4), not a new model
    assert drift(tuned) < 5e-5 and drift(fresh) > 0.01


def test_init_with_a_config_takes_the_configs_architecture(shapes_slice, tiny_config, tmp_path):
    """--init with --config: the config's architecture, the checkpoint's weights. align_flow
    and the keypoints' temperature shape no weight, so a run may change them (the
    temperature was refused); a different width is refused in one line naming it."""
    first = tmp_path / "first"
    result = run_cli("train", shapes_slice, "-o", first, "--config", tiny_config,
                     "--iterations", "1", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    generator = "  generator:\n    block_expansion: 8\n"
    assert generator in TINY
    aligned = tmp_path / "aligned.yaml"
    aligned.write_text(TINY.replace(generator, generator + "    align_flow: true\n").replace(
        "kp_detector: {block_expansion: 8,", "kp_detector: {temperature: 0.05, block_expansion: 8,"))
    result = run_cli("train", shapes_slice, "-o", tmp_path / "aligned", "--config", aligned,
                     "--init", first / "model.safetensors", "--iterations", "1",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    tuned = monkeyanim.load_model(tmp_path / "aligned" / "model.safetensors")
    assert tuned.config.generator.align_flow and tuned.config.kp_detector.temperature == 0.05
    assert tuned.provenance["initialised_from"] == str(first / "model.safetensors")  # the file
    wider = tmp_path / "wider.yaml"
    wider.write_text(TINY.replace("kp_detector: {block_expansion: 8,",
                                  "kp_detector: {block_expansion: 16,"))
    result = run_cli("train", shapes_slice, "-o", tmp_path / "wider", "--config", wider,
                     "--init", first / "model.safetensors")
    assert_one_line_error(result, "weights have other shapes than the run's: "
                                  "kp_detector.block_expansion: 8 in the checkpoint, 16 in the "
                                  "run")


@pytest.mark.parametrize("case", ["with-resume", "unknown", "subject", "authors", "seed"])
def test_init_errors(case, shapes_slice, fixture_dir, tmp_path):
    if case == "subject":
        result = run_cli("train", shapes_slice, "-o", tmp_path / "run", "--subject", "hands")
        return assert_one_line_error(result, "--subject must be face or body")
    if case == "seed":
        result = run_cli("train", shapes_slice, "-o", tmp_path / "run", "--seed", "-1")
        return assert_one_line_error(result, "seed must be a whole number of at least 0")
    if case == "authors":  # their architecture cannot come with train's --config: convert first
        authors = fixture_dir / "taichi-small.pth.tar"
        result = run_cli("train", shapes_slice, "-o", tmp_path / "run", "--init", authors,
                         "--config", "taichi")
        return assert_one_line_error(result, "is an authors' checkpoint", "monkeyanim convert")
    extra = ["--resume"] if case == "with-resume" else []
    name = "shapes" if case == "with-resume" else "nope"
    result = run_cli("train", shapes_slice, "-o", tmp_path / "run", "--init", name, *extra)
    assert_one_line_error(result, *(["--init", "--resume"] if extra else ["unknown checkpoint"]))


def test_frame_strips_are_cached_within_their_budget(datasets_dir, tmp_path):
    """MGif strips are decoded once at start while they fit; past the budget, per item."""
    strips = sorted((datasets_dir / "mgif" / "test").iterdir())[:4]
    for path in strips:
        (tmp_path / path.name).symlink_to(path)
    cached = PairDataset(tmp_path, (64, 64))
    assert sorted(cached.cache) == [0, 1, 2, 3]
    first = len(cached.frames(0)) * 64 * 64 * 3
    partly = PairDataset(tmp_path, (64, 64), strip_cache_bytes=first)
    assert sorted(partly.cache) == [0]
    for index in range(4):
        assert cached.frames(index).shape[1:] == (64, 64, 3)
        assert np.array_equal(cached.frames(index), partly.frames(index))


def test_an_animated_image_trains_as_a_video(face_frames, tmp_path):
    import cv2

    animation = cv2.Animation()
    animation.frames = [f[..., ::-1].copy() for f in face_frames[:5]]  # BGR
    animation.durations = [40] * 5
    assert cv2.imwriteanimation(str(tmp_path / "talk.png"), animation)
    dataset = PairDataset(tmp_path, (64, 64))
    assert dataset.frames(0).shape == (5, 64, 64, 3)
    assert dataset[0].shape == (2, 3, 64, 64)


def test_a_finished_run_is_never_overwritten_and_a_new_rate_carries_on(shapes_slice,
                                                                       tiny_config, tmp_path):
    """A run folder whose state.pt is gone still holds a run; one inside test/ would be read
    by evaluate. Resumed with a --config of another lr, the run trains at that rate (less
    the drops it has passed), and the log gives each iteration the rate it ran at."""
    env = {"OMP_NUM_THREADS": "1"}
    result = run_cli("train", shapes_slice, "-o", shapes_slice / "test" / "run", "--config",
                     tiny_config, "--iterations", "1", env=env)
    assert_one_line_error(result, "is inside", "test")
    run = tmp_path / "run"
    result = run_cli("train", shapes_slice, "-o", run, "--config", tiny_config, "--iterations",
                     "2", env=env)
    assert result.returncode == 0, result.stderr
    slower = tmp_path / "slower.yaml"
    slower.write_text(tiny_config.read_text().replace("train: {", "train: {lr: 0.00001, "))
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--config", slower,
                     "--iterations", "4", env=env)
    assert result.returncode == 0, result.stderr
    # 2 iterations drop the rate after the first; the new one keeps that drop (1e-5 / 10)
    assert [r["iteration"] for r in read_log(run)] == [1, 2, 3, 4]
    assert [r["lr"] for r in read_log(run)] == pytest.approx([2e-4, 2e-5, 1e-6, 1e-6])
    # what a kill after the last save leaves: iterations logged that the resumed run redoes,
    # the last line cut short
    with open(run / "log.jsonl", "a") as log:
        log.write('{"iteration": 5, "lr": 1}\n{"iteration": 6, "lr": 1}\n{"iterat')
    # a plain --resume keeps the rate it has (a --config or --lr changes it, not config.json)
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", "5", env=env)
    assert result.returncode == 0, result.stderr
    assert [r["iteration"] for r in read_log(run)] == [1, 2, 3, 4, 5]
    assert read_log(run)[-1]["lr"] == pytest.approx(1e-6)
    # a --lr, then the --config of the rate before it: the file's rate (its drop kept) again
    # (the --lr had left the schedulers' base rate as it was, and the file's seemed no change)
    for extra, iterations in ((("--lr", "1e-3"), "6"), (("--config", slower), "7")):
        result = run_cli("train", shapes_slice, "-o", run, "--resume", *extra, "--iterations",
                         iterations, env=env)
        assert result.returncode == 0, result.stderr
    assert [r["lr"] for r in read_log(run)][-2:] == pytest.approx([1e-3, 1e-6])
    # a state.pt without the weights: the way out is said (both commands refused it, each
    # naming the other)
    (run / "model.safetensors").rename(tmp_path / "kept.safetensors")
    result = run_cli("train", shapes_slice, "-o", run, "--resume", env=env)
    assert_one_line_error(result, "state.pt is there but not its model.safetensors",
                          f"remove {run / 'state.pt'}")
    (tmp_path / "kept.safetensors").rename(run / "model.safetensors")
    (run / "state.pt").unlink()
    before = (run / "model.safetensors").read_bytes()
    result = run_cli("train", shapes_slice, "-o", run, "--config", tiny_config, "--iterations",
                     "1", env=env)
    assert_one_line_error(result, "already holds a run's model.safetensors", "--init")
    assert (run / "model.safetensors").read_bytes() == before
    # a project's own config.json or log.jsonl is not a run's: refused, kept (it was replaced)
    project = tmp_path / "project"
    project.mkdir()
    for name, text in (("config.json", '{"my": "precious"}'), ("log.jsonl", "not json\nx\n")):
        (project / name).write_text(text)
        result = run_cli("train", shapes_slice, "-o", project, "--config", tiny_config,
                         "--iterations", "1", env=env)
        assert_one_line_error(result, f"{project} holds a config.json or log.jsonl that is "
                                      "not a monkeyanim run's")
        assert (project / name).read_text() == text
        (project / name).unlink()
    # a run that failed before its first checkpoint left its config.json alone, and a log
    # whose last line a kill cut short: start again
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "config.json").write_text('{"model": {}, "train": {}}')
    (failed / "log.jsonl").write_text('{"iteration": 1, "lr": 1}\n{"itera')  # not this run's
    result = run_cli("train", shapes_slice, "-o", failed, "--config", tiny_config,
                     "--iterations", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert [r["lr"] for r in read_log(failed)] == pytest.approx([2e-4])


def test_videos_beside_the_train_folder_are_said_left_out(shapes_slice, tiny_config, tmp_path):
    """With 2 videos in train/ and 12 beside it, a run said 'training on 2 videos' alone."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train").symlink_to(shapes_slice / "train")
    (data / "extra.mp4").symlink_to(ROOT / "examples" / "shapes" / "driving.mp4")
    result = run_cli("train", data, "-o", tmp_path / "run", "--config", tiny_config,
                     "--max-minutes", "0", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert f"warning: 1 video in {data} beside its train/ folder left out" in result.stderr
    assert "extra.mp4" in result.stderr


def test_a_kill_between_a_checkpoints_renames_is_said_and_its_temps_go(shapes_slice, tiny_config,
                                                                      tmp_path):
    """A kill -9 between the model's rename and the state's left a pair that disagrees
    (refused with no way out), and every kill while writing left tens of MB of temps."""
    run, env = tmp_path / "run", {"OMP_NUM_THREADS": "1"}
    assert run_cli("train", shapes_slice, "-o", run, "--config", tiny_config, "--iterations",
                   "1", env=env).returncode == 0
    old_state = (run / "state.pt").read_bytes()
    assert run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", "2",
                   env=env).returncode == 0
    (run / "state.pt").write_bytes(old_state)  # the model renamed, the kill before the state
    stale = [run / ".model.safetensors.k1ll3d9x.tmp", run / ".state.pt.k1ll_d9x.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    kept = [run / ".model.safetensors.notes", run / ".state.pt.before-lr-drop",
            run / ".best.safetensors.iteration0-keep"]  # a user's, not temps' names
    for path in kept:
        path.write_text("mine")
    result = run_cli("train", shapes_slice, "-o", run, "--resume", env=env)
    way_out = f"-o NEW_DIR --init {run / 'model.safetensors'} --config {run / 'config.json'}"
    assert_one_line_error(result, "(iteration 2) and", "(iteration 1) disagree", way_out)
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
    # the way out (the run's own settings, not the preset's: a batch of 8 pairs, not 16)
    result = run_cli("train", shapes_slice, *way_out.replace("NEW_DIR", str(tmp_path / "new"))
                     .split(), "--iterations", "3", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "new" / "config.json").read_text())["train"]["batch_size"] == 8


def test_init_with_a_preset_takes_its_training_settings(shapes_slice, tmp_path):
    """--init mgif --config moving-gif: mgif's (narrower) architecture and weights, the
    moving-gif preset's training settings; the metadata says what the weights are for."""
    run = tmp_path / "tuned"
    result = run_cli("train", shapes_slice, "-o", run, "--init", "mgif", "--config",
                     "moving-gif", "--iterations", "1", "--batch-size", "2",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["augmentation"]["resize_ratio"] == [0.9, 1.1]  # moving-gif's
    tuned, start = monkeyanim.load_model(run / "model.safetensors"), monkeyanim.load_model("mgif")
    assert tuned.config == start.config
    assert tuned.provenance["default_mode"] == "absolute"


def test_one_run_at_a_time_in_a_folder(shapes_slice, tiny_config, tmp_path):
    """A second run started in a folder where one is training (a scheduler's job queued
    twice) logged every iteration twice and saved over the first: it is refused until the
    first ends."""
    run, env = tmp_path / "run", {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "monkeyanim", "train", str(shapes_slice), "-o", str(run),
         "--config", str(tiny_config), "--iterations", "100000"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, preexec_fn=sigint_default)
    try:  # config.json: the folder is held; state.pt: a first checkpoint (then both runs are
        # refused for the lock, not for what they find in the folder)
        for name, extra in (("config.json", ()), ("state.pt", ()), ("state.pt", ("--resume",))):
            deadline = time.time() + 120
            while time.time() < deadline and not (run / name).exists():
                time.sleep(0.02)
            result = run_cli("train", shapes_slice, "-o", run, "--config", tiny_config, *extra)
            assert_one_line_error(result, "another run is training in", "wait for it")
    finally:
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    done = read_log(run)[-1]["iteration"]
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--iterations", str(done + 1),
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert [r["iteration"] for r in read_log(run)] == list(range(1, done + 2))
    # a kill -9: its loader workers outlive it by seconds, and must not hold the folder
    killed = subprocess.Popen(
        [sys.executable, "-m", "monkeyanim", "train", str(shapes_slice), "-o", str(run),
         "--resume", "--iterations", "100000", "--workers", "2"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_log(run)) < done + 3:
        time.sleep(0.05)
    killed.kill()
    killed.wait(timeout=60)
    # (--max-minutes 0: one iteration on from wherever it saved; a fixed --iterations fell
    # behind a checkpoint the killed run made just before the kill, and was refused)
    result = run_cli("train", shapes_slice, "-o", run, "--resume", "--max-minutes", "0",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    # a Trainer that failed in this process (a notebook keeps it, in the traceback) holds
    # nothing: a run from elsewhere goes on
    from monkeyanim.errors import InputError
    from monkeyanim.train import Trainer
    from monkeyanim.trainconfig import load_train_config

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(InputError, match="nothing to resume") as failed:
        Trainer(shapes_slice, fresh, *load_train_config(str(tiny_config)), resume=True)
    assert not (fresh / ".lock").exists()  # a folder refused as a run's keeps nothing of it
    # a second Trainer in this process (a notebook cell run again) is refused, and dropping
    # it leaves the first one's hold (a POSIX lock is the process's: closing a second
    # descriptor dropped it); the lock file is as writable as the umask lets the group make it
    previous = os.umask(0o002)
    try:
        first = Trainer(shapes_slice, fresh, *load_train_config(str(tiny_config)))
    finally:
        os.umask(previous)
    assert (fresh / ".lock").stat().st_mode & 0o777 == 0o664
    with pytest.raises(InputError, match="another run is training"):
        Trainer(shapes_slice, fresh, *load_train_config(str(tiny_config)))
    result = run_cli("train", shapes_slice, "-o", fresh, "--config", tiny_config,
                     "--iterations", "1", env={"OMP_NUM_THREADS": "1"})
    assert_one_line_error(result, "another run is training")
    first.lock.release()
    result = run_cli("train", shapes_slice, "-o", fresh, "--config", tiny_config,
                     "--iterations", "1", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0 and failed.value, result.stderr


def test_more_processes_than_videos_is_refused_not_a_hang(datasets_dir, tiny_config, tmp_path):
    """Under torchrun, a rank without a video of its own waited for one forever (and the
    others for it; Ctrl-C could not stop them)."""
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "one.png").symlink_to(next(iter(sorted((datasets_dir / "shapes" / "train").iterdir()))))
    result = subprocess.run(
        [*torchrun(2), "-m", "monkeyanim", "train", str(data.parent), "-o", str(tmp_path / "run"),
         "--config", str(tiny_config), "--iterations", "2"], capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and errors, result.stderr[-2000:]
    assert "1 training video(s) for 2 processes" in errors[0]
