"""Native libraries that log to the process's stderr on their own (mediapipe's C++ and
TFLite: 'Created TensorFlow Lite XNNPACK delegate', 'Feedback manager requires...'): their
chatter is muted around the calls, so that the command line prints only its own lines."""

from __future__ import annotations

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
