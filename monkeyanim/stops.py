"""How a command stops: Ctrl-C or a kill (SIGTERM, as job schedulers and torchrun send) as one
Interrupted error (exit code 130 or 143, the writers removing what they started), a stop
asked for between training steps, and one held back until a batch job whose output is whole
has handed back its result."""

from __future__ import annotations

import signal
import time

from . import files
from .errors import Interrupted

STOP_SIGNALS = {signal.SIGINT: ("interrupted", signal.default_int_handler),
                signal.SIGTERM: ("terminated", signal.SIG_DFL)}  # name, Python's own handling
SECONDS_PER_MINUTE = 60


def install() -> None:
    """Ctrl-C and SIGTERM raise Interrupted from here on. Typer turns KeyboardInterrupt into
    a silent exit and SIGTERM would end Python at once, leaving the hidden temporary output
    behind; our own exception keeps the message and lets every writer remove what it
    started. A signal ignored by the parent stays ignored."""
    for signum, (_, python_default) in STOP_SIGNALS.items():
        if signal.getsignal(signum) is python_default:
            signal.signal(signum, _interrupt)


def _interrupt(signum, frame) -> None:
    if JOB_STOP.defers(signum):
        return
    raise stopped(signum)


def stopped(signum: int) -> Interrupted:
    """The error a stop by signal ``signum`` ends a command with."""
    return Interrupted(f"{STOP_SIGNALS[signum][0]}: unfinished outputs were removed",
                       exit_code=128 + signum)


class JobStop:
    """Around one batch job: a stop that lands once the job's output is whole (renamed into
    place) waits for the job to hand back its result, then ends the batch; such an output was
    counted as not run, its numbers lost. A second stop ends it at once."""

    def __init__(self):
        self.since: int | None = None  # files.published_count when the job started
        self.pending: int | None = None  # the signal held back

    def defers(self, signum: int) -> bool:
        """Whether the stop by ``signum`` is held back (and so noted) rather than raised."""
        if self.since is None or self.pending is not None \
                or files.published_count == self.since:
            return False
        self.pending = signum
        return True

    def __enter__(self) -> None:
        self.since, self.pending = files.published_count, None

    def __exit__(self, kind, *_) -> None:
        pending, self.since, self.pending = self.pending, None, None
        if pending is not None and kind is None:
            raise stopped(pending)


JOB_STOP = JobStop()


class StopRequest:
    """Asked after every training iteration (or epoch) whether to stop: after ``minutes`` of
    training, or once Ctrl-C (or SIGTERM) has come, so that the step under way finishes and
    is saved. A second Ctrl-C stops at once, with ``again`` as its message."""

    def __init__(self, minutes: float | None, again: str):
        self.deadline = (None if minutes is None
                         else time.monotonic() + SECONDS_PER_MINUTE * minutes)
        self.reason: str | None = None
        self.signum: int | None = None  # the signal that asked for the stop
        self.previous: dict[int, object] = {}
        self.again = again

    def __enter__(self) -> StopRequest:
        self.previous = {sig: signal.signal(sig, self._signalled)
                         for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    @property
    def exit_code(self) -> int | None:
        """128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), or None: no signal."""
        return None if self.signum is None else 128 + self.signum

    def _signalled(self, signum, frame) -> None:
        if self.signum is not None:
            raise Interrupted(self.again, exit_code=128 + signum)
        self.signum, self.reason = signum, STOP_SIGNALS[signum][0]

    def __call__(self) -> bool:
        if self.reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self.reason = "--max-minutes reached"
        return self.reason is not None
