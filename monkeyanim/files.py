"""Atomic file writes: build the file under a temp name beside it, then rename into place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """An empty temp file in ``path``'s folder (so the final rename stays on one filesystem)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the permissions a new file would get (mkstemp makes it 0600), rename it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, then move the result to ``path``; on failure or interruption
    the temp file is removed and an existing ``path`` is left untouched."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        write(tmp)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
