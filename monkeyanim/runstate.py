"""A training run's folder: the checks made before a run starts in it, its state.pt (what
``Trainer.save`` writes beside model.safetensors and ``--resume`` reads back: optimisers,
schedulers, random generators, iteration) and its sample images."""

from __future__ import annotations

import errno
import fcntl
import glob
import io
import json
import math
import os
import random
import re
import weakref
from pathlib import Path

import cv2
import numpy as np
import torch

from .checkpoint import MODEL_FILE, STATE_FILE
from .errors import InputError, TrainingDiverged
from .files import TEMP_RANDOM_CHARS, atomic_write, check_writable
from .pipeline import to_uint8

SAMPLE_PAIRS = 4  # rows of a sample image: the first pairs of the last batch
LOG_FILE, CONFIG_FILE = "log.jsonl", "config.json"  # beside the weights, in the run folder
LOG_LINES_CHECKED = 100  # of a log.jsonl there, to tell a run's from another file

STATE_KEYS = {"iteration", "optimizers", "schedulers", "torch_rng", "python_rng"}
PYTHON_RNG_VERSION = 3  # random.getstate()'s first item; state.pt keeps its second


def fresh_start(run_dir: Path, settings: bool = True) -> str:
    """The way out of a run folder that cannot be resumed: a new run in another folder from
    its weights (and its settings: without them, the preset's would be the new run's)."""
    config = f" --config {run_dir / CONFIG_FILE}" if settings else ""
    return (f"start a new run in another folder from its weights{' and settings' * settings}: "
            f"-o NEW_DIR --init {run_dir / MODEL_FILE}{config}")


def state_bytes(iteration: int, total: int, optimizers: dict, schedulers: dict) -> bytes:
    """The state.pt of a run at ``iteration`` of ``total``, serialised."""
    state = {"iteration": iteration,
             "optimizers": {k: v.state_dict() for k, v in optimizers.items()},
             "schedulers": {k: v.state_dict() for k, v in schedulers.items()},
             "torch_rng": torch.get_rng_state(), "python_rng": list(random.getstate()[1]),
             "total": total}
    buffer = io.BytesIO()  # torch.save into a full disk fails as 'unexpected pos', not ENOSPC
    torch.save(state, buffer)
    return buffer.getvalue()


def read_state(path: Path) -> dict:
    """A run's state.pt (optimisers, schedulers, RNGs, iteration), or one line saying why not."""
    try:
        # on the CPU: the RNG state must stay a CPU byte tensor, and Adam's load_state_dict
        # moves its moments to each parameter's device itself
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike mean "unreadable"
        raise InputError(f"{path} is damaged or not a monkeyanim training state "
                         f"({type(exc).__name__}): {fresh_start(path.parent)}") from None
    if not isinstance(state, dict) or not STATE_KEYS <= set(state):
        raise InputError(f"{path} is not a monkeyanim training state (no "
                         f"{', '.join(sorted(STATE_KEYS))}): {fresh_start(path.parent)}")
    return state


def restore_state(path: Path, optimizers: dict, schedulers: dict) -> int:
    """A run's state.pt read back into its ``optimizers`` and ``schedulers`` (each network's
    by name) and the random generators; returns its iteration."""
    state = read_state(path)
    if set(state["optimizers"]) != set(optimizers):
        raise InputError(f"{path} trains {', '.join(state['optimizers'])} but the config "
                         f"{', '.join(optimizers)} (train.trainable): resume with the run's "
                         "own config")
    for name in optimizers:
        load_optimizer(optimizers[name], state["optimizers"][name], path)
        schedulers[name].load_state_dict(state["schedulers"][name])
    torch.set_rng_state(state["torch_rng"])
    random.setstate((PYTHON_RNG_VERSION, tuple(state["python_rng"]), None))
    return int(state["iteration"])


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict, path: Path) -> None:
    """Adam's saved moments into ``optimizer``, refused unless each fits its parameter (Adam
    itself checks only how many parameters there are, and fails at the next step)."""
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} does not fit the run's network ({exc})") from None
    for group in optimizer.param_groups:
        for param in group["params"]:
            moment = optimizer.state.get(param, {}).get("exp_avg")
            if moment is not None and moment.shape != param.shape:
                raise InputError(f"{path} was saved for another network (a moment of shape "
                                 f"{tuple(moment.shape)} for a parameter of shape "
                                 f"{tuple(param.shape)}): the run folder is inconsistent")


def check_run_dir(run_dir: Path, resume: bool, run_files: tuple[str, ...] = ()) -> None:
    """Before the data is read: the folder and its missing parents are made later. A new
    run is refused where weights are already, model.safetensors or one of ``run_files``:
    a finished run whose state.pt is gone would be overwritten. (A config.json alone is
    what a run that failed before its first checkpoint leaves: it starts again there.)"""
    existing = next(path for path in (run_dir, *run_dir.parents) if path.exists())
    if not existing.is_dir():
        raise InputError(f"run folder cannot be created at {run_dir}: {existing} is a file")
    if resume and not (run_dir / STATE_FILE).is_file():
        raise InputError(f"nothing to resume in {run_dir} (no {STATE_FILE})")
    if resume and not (run_dir / MODEL_FILE).is_file():  # the state alone restarts nothing
        raise InputError(f"nothing to resume in {run_dir}: its {STATE_FILE} is there but not "
                         f"its {MODEL_FILE}, the weights; to train there from the start, "
                         f"remove {run_dir / STATE_FILE} (or choose another folder)")
    if not resume and (run_dir / STATE_FILE).exists():
        raise InputError(f"{run_dir} already holds a run: use --resume to continue it")
    found = [name for name in (MODEL_FILE, *run_files) if (run_dir / name).exists()]
    if not resume and found:
        raise InputError(f"{run_dir} already holds a run's {found[0]}: choose another folder "
                         f"(or --init {run_dir / found[0]} to start from its weights)")
    if not resume:
        _check_own_files(run_dir)


def _check_own_files(run_dir: Path) -> None:
    """A new run replaces config.json and empties log.jsonl: only where they are a run's
    (one that failed before its first checkpoint), not a project's files of those names."""
    config, log = run_dir / CONFIG_FILE, run_dir / LOG_FILE
    try:
        ours = not config.exists() or set(json.loads(config.read_text())) == {"model", "train"}
        lines = log.read_text().splitlines() if log.exists() else []
    except (OSError, ValueError, TypeError):  # (json's errors, bad UTF-8: ValueErrors)
        ours, lines = False, []
    foreign = [line for line in lines[:LOG_LINES_CHECKED] if not _log_record(line)]
    if not ours or foreign and foreign != lines[-1:]:  # (the last: a line cut by a kill)
        raise InputError(f"{run_dir} holds a {CONFIG_FILE} or {LOG_FILE} that is not a "
                         "monkeyanim run's, which a run there would replace: choose another "
                         "folder")


def remove_stale_temps(run_dir: Path, names: tuple[str, ...]) -> None:
    """The temp files of ``names`` that a killed run left (a kill -9 while a checkpoint was
    written: tens of MB each, piling up under preemption), with the run's lock held: no
    other process writes there."""
    for name in names:
        temp = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{{TEMP_RANDOM_CHARS}}}\.tmp")
        for path in run_dir.glob(f".{glob.escape(name)}.*"):
            if temp.fullmatch(path.name) and path.is_file():  # (mkstemp's names alone)
                path.unlink(missing_ok=True)


def _log_record(line: str) -> bool:
    """Whether ``line`` is a record of a run's log.jsonl (or blank)."""
    try:
        return not line.strip() or isinstance(record := json.loads(line), dict) and \
            "iteration" in record
    except (ValueError, TypeError):
        return False


LOCK_FILE = ".lock"  # in the run folder: what lock_run_dir locks
_HELD: set[Path] = set()  # the lock files this process holds (see lock_run_dir)


def lock_run_dir(run_dir: Path) -> int | None:
    """Hold the run folder for this process: two runs in one folder (a second started by
    mistake, a scheduler's job queued twice, a notebook cell run again) would log every
    iteration twice and save over each other. A POSIX lock on RUN_DIR/.lock: held by this
    process alone (not by the loader workers it forks, which outlive a kill -9 by seconds),
    dropped when it ends however it ends, and kept by NFS; being the process's, it is taken
    once per process (a second descriptor closed would drop it). Returns the descriptor to
    keep open (unlock_run_dir lets go), or None where no lock can be had: a file system
    without locks, a .lock this user cannot write (another's, in a shared folder)."""
    path = run_dir.resolve() / LOCK_FILE
    if path in _HELD:
        raise _busy(run_dir)
    try:  # (0o666 less the umask: a group-writable run folder's lock is the group's too)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:  # a read-only folder: its own writes will say so
        return None
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(descriptor)
        if error.errno in (errno.EACCES, errno.EAGAIN):
            raise _busy(run_dir) from None
        return None  # (ENOLCK, ENOSYS: no locks here)
    _HELD.add(path)
    return descriptor


def unlock_run_dir(run_dir: Path, descriptor: int) -> None:
    """Let go of what lock_run_dir took."""
    _HELD.discard(run_dir.resolve() / LOCK_FILE)
    os.close(descriptor)


def _busy(run_dir: Path) -> InputError:
    return InputError(f"another run is training in {run_dir} now: wait for it to end, or "
                      "stop it (Ctrl-C saves it), before starting or resuming one there")


class RunLock:
    """The lock a run holds on its folder (lock_run_dir), taken by hold() once the folder
    exists (``active``: rank 0 alone), let go by release() or when the run is dropped."""

    def __init__(self, run_dir: Path, active: bool = True):
        self.run_dir, self.active, self.made = run_dir, active, False
        self._unlock: weakref.finalize | None = None

    def hold(self) -> None:
        if self.active and self._unlock is None and self.run_dir.is_dir():
            self.made = not (self.run_dir / LOCK_FILE).exists()
            descriptor = lock_run_dir(self.run_dir)
            if descriptor is not None:
                self._unlock = weakref.finalize(self, unlock_run_dir, self.run_dir, descriptor)

    def release(self, discard: bool = False) -> None:
        """Let go; ``discard``: a run that never started also removes the .lock it made
        (in a folder refused as a run folder, say)."""
        if self._unlock is not None and self._unlock.alive:
            self._unlock()
            if discard and self.made:
                (self.run_dir / LOCK_FILE).unlink(missing_ok=True)


def divergence_error(iteration: int, losses: dict[str, float], model_path: Path,
                     saved: int | None) -> TrainingDiverged:
    """The error that ends a run whose losses or weights stopped being finite numbers, with
    the way on: from the checkpoint ``saved`` (its iteration), or from the start."""
    bad = ", ".join(f"{k} {v}" for k, v in losses.items() if not math.isfinite(v))
    kept = (f"{model_path} (iteration {saved}) is kept; --resume" if saved is not None
            else "nothing was saved; start again")
    return TrainingDiverged(f"training diverged at iteration {iteration} "
                            f"({bad or 'the weights, or another process loss, not finite'}): "
                            f"{kept} with a lower --lr, or fp32 if --precision was lower")


def check_outside(run_dir: Path, *folders: Path) -> None:
    """The run folder must not be among the videos read: its samples would become
    training (or validation) videos on the next resume."""
    run = run_dir.resolve()
    for folder in map(Path.resolve, folders):
        if run == folder or folder in run.parents:
            raise InputError(f"run folder {run_dir} is inside {folder}, whose videos are read "
                             "(by train or evaluate): its samples would be read as videos "
                             "too; choose a folder outside it")


def make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"run folder cannot be created at {run_dir}: "
                         f"{error.strerror}") from error
    check_writable(run_dir, "run folder")


def trim_log(path: Path, through: int | None) -> None:
    """log.jsonl as the run starting now continues it: the records up to iteration ``through``
    (the checkpoint a resumed run starts from), or none for a new run. A run killed after its
    last save logged iterations that it will run and log again; a run that failed before its
    first save left a log that is not this run's. A line cut short by the kill is dropped."""
    if not path.exists():
        return
    kept = []
    if through is not None:
        for line in path.read_text(errors="replace").splitlines():
            try:
                iteration = json.loads(line)["iteration"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(iteration, int) and iteration <= through:
                kept.append(line + "\n")
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))


def write_sample(run_dir: Path, iteration: int, source: torch.Tensor, target: torch.Tensor,
                 out) -> None:
    """run_dir/samples/ITERATION.png: a row per pair, source | target | prediction | deformed
    source (| its blend weight, white = 1). source, target (B, 3, H, W) in [0, 1]; out the
    generator's output for them."""
    columns = [source, target, out.frames, out.deformed]
    if out.blend is not None:
        columns.append(out.blend.expand_as(out.deformed))  # (B, 3, H, W)
    rows = [np.concatenate(list(to_uint8(t[:SAMPLE_PAIRS].detach())), axis=0)  # (P*H, W, 3)
            for t in columns]
    image = np.concatenate(rows, axis=1)  # (P*H, columns*W, 3)
    folder = run_dir / "samples"
    folder.mkdir(exist_ok=True)
    encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))[1].tobytes()
    atomic_write(folder / f"{iteration:07d}.png", lambda tmp: tmp.write_bytes(encoded))
