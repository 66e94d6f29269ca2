"""Native libraries that log to the process's stderr on their own (mediapipe's C++ and
TFLite: 'Created TensorFlow Lite XNNPACK delegate', 'Feedback manager requires...'): their
chatter is muted around the calls, so that the command line prints only its own lines.
And the C allocator's settings, which decide how often the kernel has to zero fresh pages."""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def muted_stderr() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside the block (Python warnings are held back
    too); errors still arrive as Python exceptions. MONKEYANIM_DEBUG=1 leaves it alone."""
    if os.environ.get("MONKEYANIM_DEBUG") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# glibc's mallopt parameters (malloc.h) and the values set: keep blocks up to glibc's 64-bit
# ceiling for mmap (32 MiB) on the heap, and freed memory in the process up to mallopt's int
# limit. By default every batch's large activations were mapped afresh: 180,000 page faults
# (zeroed pages) per taichi64 training iteration at batch 16, about a tenth of its time.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = (1 << 31) - 1
TOP_PAD_BYTES = 256 << 20


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed memory instead of handing it back to the kernel and
    faulting fresh zeroed pages in for the next batch (measured on a 2-core CPU: training
    about 10% faster, animate at 64x64 about 20%; peak memory stays as it was). It holds for
    the whole process, so the command line calls it once at start; a no-op returning False
    where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                (M_TOP_PAD, TOP_PAD_BYTES))
    return all(mallopt(param, value) == 1 for param, value in settings)
