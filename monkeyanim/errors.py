"""Exception types raised by the library; the CLI turns each into one readable line."""

from __future__ import annotations

import operator
import re


class MonkeyAnimError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(MonkeyAnimError):
    """An unknown preset name, or a config file that is missing or malformed."""


class CheckpointError(MonkeyAnimError):
    """A checkpoint that is missing, corrupt, or does not match its architecture."""


class InputError(MonkeyAnimError):
    """A user input (image, video, folder, option value) that cannot be used."""


class NoFaceError(InputError):
    """No face found where a face crop was asked for (not: a frame that cannot be read)."""


class TrainingDiverged(MonkeyAnimError):
    """A loss or a weight became NaN or infinite: the run stops, its last checkpoint kept."""


class OutputError(MonkeyAnimError):
    """An output that could not be written: disk full, no permission, an I/O error."""


def check_count(value, what: str, smallest: int | None = None) -> None:
    """InputError unless ``value`` is a whole number (an int of any kind, numpy's and a 0-d
    int tensor too; not a bool or a float), and at least ``smallest`` where given."""
    try:
        operator.index(value)
    except TypeError:
        raise InputError(f"{what} must be a whole number, not {value!r}") from None
    if isinstance(value, bool):
        raise InputError(f"{what} must be a whole number, not {value!r}")
    if smallest is not None and value < smallest:
        raise InputError(f"{what} must be at least {smallest}, not {value}")


def first_line(exc: BaseException) -> str:
    """What went wrong, in one line: an OSError's reason alone (PyAV's hold FFmpeg's there;
    their str adds the errno and path), else the message's first line, else the type."""
    reason = getattr(exc, "strerror", None)
    if isinstance(reason, str) and reason.strip():
        return reason.strip()
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def cannot_write(path, exc: OSError) -> OutputError:
    """The one-line OutputError for ``exc`` raised while writing ``path``."""
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


class Interrupted(MonkeyAnimError):
    """Ctrl-C or kill: raised from the SIGINT / SIGTERM handler so outputs in progress are
    discarded; ``exit_code`` is the shell's convention, 128 + the signal's number."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class OutOfMemory(MonkeyAnimError):
    """The machine (or the GPU) ran out of memory; a smaller batch or frame size may fit."""


# how PyTorch (CPU and CUDA), OpenCV and FFmpeg word a failed allocation
_OOM_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory",
              "not enough memory", "insufficient memory")
_OOM_BYTES = re.compile(r"allocate (\d+) bytes")  # PyTorch's CPU allocator and OpenCV
_OOM_CUDA_AMOUNT = re.compile(r"Tried to allocate ([\d.]+ [KMGT]iB)")


def out_of_memory(exc: BaseException) -> OutOfMemory | None:
    """The OutOfMemory that ``exc`` stands for when it is a failed allocation (Python's
    MemoryError, PyTorch's CPU or CUDA allocator, OpenCV), else None."""
    text = str(exc)
    cuda = type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text
    if not (isinstance(exc, MemoryError) or cuda
            or any(words in text.lower() for words in _OOM_WORDS)):
        return None
    if found := _OOM_BYTES.search(text):
        amount = f" (an allocation of {int(found[1]) / 2 ** 30:.1f} GiB failed)"
    elif found := _OOM_CUDA_AMOUNT.search(text):
        amount = f" (an allocation of {found[1]} failed)"
    else:
        amount = ""
    return OutOfMemory(f"out of {'GPU ' if cuda else ''}memory{amount}")
