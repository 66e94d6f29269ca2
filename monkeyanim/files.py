"""Paths in and out: inputs and outputs checked before any work starts, and atomic writes
(build the file under a temp name beside it, then rename it into place)."""

from __future__ import annotations

import errno
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, OutputError, cannot_write


NAME_MAX_BYTES = 255  # the longest file name most file systems take (ext4, APFS, NTFS)
TEMP_RANDOM_CHARS = 8  # what mkstemp adds between prefix and suffix


def av_path(path: str | Path) -> str:
    """``path`` as FFmpeg is to open it: absolute, so that a relative name with a colon
    ('12:30.mp4', 'shot:1.png') is not read as a protocol and its address."""
    # not os.path.abspath, which takes 'link/../x' for the x beside the link, where the
    # file system finds the x beside the link's target
    return str(Path(path).absolute())


def write_target(path: Path) -> Path:
    """Where writing ``path`` lands: behind a symbolic link, the file it points to (the link
    stays a link, as when any program writes through one), else ``path``."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """An empty temp file beside where ``path`` is written (``write_target``: so that the
    final rename stays on one filesystem), named after it, shortened where that name is too
    long to bear the temp's additions; OutputError when it cannot be made."""
    path = write_target(path)
    room = NAME_MAX_BYTES - len(f"..{suffix}".encode()) - TEMP_RANDOM_CHARS
    # cut as the file system counts, in bytes (a name need not be UTF-8: fsdecode keeps any)
    name = os.fsdecode(os.fsencode(path.name)[:room])
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise cannot_write(path, exc) from exc
    os.close(fd)
    return Path(tmp)


# outputs renamed into place so far in this process: the CLI lets a batch job whose output
# is whole hand back its result before a stop ends the batch (stops.JobStop)
published_count = 0


def publish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the permissions a new file would get (mkstemp makes it 0600), rename it;
    never over a device, pipe or socket (as root, /dev/full would become a plain file)."""
    global published_count
    check_regular(path)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    published_count += 1  # first: a stop landing just after the rename finds it counted
    os.replace(tmp, write_target(path))


def check_regular(path: Path) -> None:
    """OutputError if ``path`` exists (behind any link) as something else than a file or a
    folder: renaming a new file there would replace a device, pipe or socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing (or a dangling link): a new file is fine
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OutputError(f"{path} is not a regular file (a device, pipe or socket): "
                          "name a file to write")


def atomic_write_all(writes: dict[Path, Callable[[Path], object]]) -> None:
    """atomic_write for files that belong together (a model and its training state): each
    is written under a temp name, then all are renamed into place with Ctrl-C and kill held
    back until the last rename, so an interruption or a full disk leaves the old set or the
    new one, never a mix."""
    temps: dict[Path, Path] = {}
    path = next(iter(writes))
    try:
        for path, write in writes.items():
            temps[path] = temp_beside(path)
            write(temps[path])
        with _signals_held():
            for path, tmp in temps.items():
                publish(tmp, path)
    except OSError as exc:
        raise cannot_write(path, exc) from exc
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


@contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait (the kernel keeps them pending) until the block ends; Python's
    handlers would otherwise run between any two lines. Main thread, POSIX only."""
    if not hasattr(signal, "pthread_sigmask") or \
            threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, then move the result to ``path``; on failure or interruption
    the temp file is removed and an existing ``path`` is left untouched. An OSError (disk
    full, no permission) becomes OutputError."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        write(tmp)
        publish(tmp, path)
    except OSError as exc:
        raise cannot_write(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


# what -o names when it is a file: a batch's -o ending so is a mistake, not a folder name
FILE_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".webp", ".png", ".jpg",
                 ".jpeg", ".json", ".safetensors"}


def check_not_input(path: Path, *inputs: Path | None) -> None:
    """Refuse an output that is one of the ``inputs`` (the same file by any name, links
    included): even with --overwrite, replacing what is being read is a slip of the keyboard."""
    for source in inputs:
        try:
            same = source is not None and os.path.samefile(path, source)
        except OSError:  # either does not exist (yet)
            same = False
        if same:
            raise InputError(f"output {path} is the input {source} itself: name another file")


def check_none_is_input(outputs: list[Path], inputs: list[Path]) -> None:
    """check_not_input for a batch: no output may be any input of the whole batch (a link in
    the output folder to another pair's input, written through with --overwrite, would be
    read as that damaged input next). Each file is looked at once, by device and inode."""
    ids = {}
    for source in inputs:
        try:
            found = os.stat(source)
        except OSError:  # not there (yet): reading it will say so
            continue
        ids[(found.st_dev, found.st_ino)] = source
    for path in outputs:
        try:
            found = os.stat(path)
        except OSError:
            continue
        source = ids.get((found.st_dev, found.st_ino))
        if source is not None:
            raise InputError(f"output {path} is the input {source} itself"
                             + (" (through a link)" if path.is_symlink() else "")
                             + ": name another file")


def check_json_apart(json_path: Path | None, *outputs: Path) -> None:
    """Refuse a --json path that names an output file itself (one would overwrite the
    other)."""
    if json_path is not None and json_path.resolve() in {out.resolve() for out in outputs}:
        raise InputError(f"--json {json_path} names an output file itself: name another file")


def check_json_name(json_path: Path | None) -> None:
    """Refuse a --json named like a video, an image or a checkpoint (x.gif): in a folder of
    videos the next batch or evaluate would read it as one."""
    if json_path is not None and json_path.suffix.lower() in FILE_SUFFIXES - {".json"}:
        raise InputError(f"--json {json_path} is named like a {json_path.suffix} file, which "
                         "would be read as one: name it .json")


def already_there(path: Path) -> str:
    """Why an output in the way is not replaced; an empty file (no output of ours: they are
    renamed into place whole), which --skip-existing does not take for done, is named so."""
    if path.is_file() and path.stat().st_size == 0:
        return (f"{path} already exists, empty: delete it (or use --overwrite to replace it "
                "and the other outputs)")
    return f"{path} already exists (use --overwrite to replace it)"


def check_output(path: Path, overwrite: bool, suffixes: tuple[str, ...] = (),
                 inputs: tuple[Path | None, ...] = ()) -> Path:
    """Refuse to clobber an existing output or any of ``inputs``, and fail early if its folder
    is not writable or its name does not end in one of ``suffixes`` (when given)."""
    check_not_input(path, *inputs)
    if suffixes and path.suffix.lower() not in suffixes:
        choices = ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 \
            else suffixes[0]
        raise InputError(f"output {path} must end in {choices}")
    if path.is_dir():  # --overwrite replaces files, never a folder with what is in it
        raise InputError(f"output {path} is a folder: name a file to write")
    check_regular(path)
    if path.exists() and not overwrite:
        raise InputError(already_there(path))
    if path.is_symlink() and not path.exists() and not overwrite:  # what it names is missing
        raise InputError(f"{path} already exists, as a link to {os.readlink(path)} (use "
                         "--overwrite to write there)")
    target = write_target(path)  # behind a link, the folder written is the target's
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder does not exist: {folder}")
    check_writable(folder)
    return path


def check_writable(folder: Path, what: str = "output folder") -> None:
    """InputError "WHAT is not writable" unless a file can be made in ``folder``: tried for
    real, since os.access says yes to root where the file system still says no (sysfs,
    NFS's root squashing)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".monkeyanim-probe-"):
            pass
    except OSError as error:  # (sysfs and procfs answer "no such file")
        why = "" if error.errno == errno.ENOENT else f" ({error.strerror})"
        raise InputError(f"{what} is not writable: {folder}{why}") from None


def input_files(path: Path, suffixes: set[str], what: str) -> list[Path]:
    """A file, or every file with one of ``suffixes`` in a folder (sorted)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
        if not files:
            raise InputError(f"folder {path} holds no {what}")
        return files
    require(path, what.rstrip("s"))
    return [path]


def require(path: Path, what: str) -> None:
    """InputError "WHAT not found: PATH" unless ``path`` exists (see not_found)."""
    if not path.exists():
        raise not_found(path, what)


def not_found(path: Path, what: str) -> InputError:
    """The error for a ``what`` at ``path`` that is not there to read: missing, a link to
    nothing (or to itself), or a pipe, device or socket (read more than once, as videos are,
    a pipe would give nothing the second time)."""
    if path.is_symlink() and not path.exists():
        try:
            target = os.readlink(path)
        except OSError:  # gone meanwhile
            return InputError(f"{what} not found: {path}")
        return InputError(f"{what} not found: {path} is a link to {target}, which "
                          + ("leads back to it" if _loops(path) else "is not there"))
    if path.exists() and not path.is_file() and not path.is_dir():
        return InputError(f"{what} {path} is not a regular file (a pipe, device or socket): "
                          "save it to a file first")
    return InputError(f"{what} not found: {path}")


def _loops(link: Path) -> bool:
    """Whether following ``link`` leads round in a circle."""
    try:
        link.resolve(strict=True)
    except RuntimeError:  # Python before 3.13 says so this way
        return True
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


_MADE_FOLDERS: list[Path] = []  # made by output_folder in this process, newest last


BATCH_OUTPUT = "with folders of inputs, -o names the folder for the results"


def output_folder(output: Path, why: str = BATCH_OUTPUT) -> Path:
    """-o for a batch: a folder, made if missing (its parent must exist); one made here that
    is still empty when the command ends goes again (``remove_unused_folders``). ``why`` says
    why -o must be a folder, for the errors."""
    if output.exists() and not output.is_dir():
        raise InputError(f"{output} is a file, but {why}")
    if not output.exists() and output.suffix.lower() in FILE_SUFFIXES:
        raise InputError(f"{output} looks like a file, but {why}")
    if not output.parent.is_dir():
        raise InputError(f"output folder does not exist: {output.parent}")
    try:
        output.mkdir()
        _MADE_FOLDERS.append(output)
    except FileExistsError:
        pass
    except OSError as exc:  # a read-only file system, a parent the user may not write to
        raise InputError(f"cannot make the output folder {output}: {exc.strerror}") from exc
    check_writable(output)
    return output


def remove_unused_folders() -> None:
    """Remove the folders output_folder made in this process that are still empty: a
    command that failed before writing anything (unreadable input, unknown checkpoint)
    leaves the disk as it found it."""
    while _MADE_FOLDERS:
        try:
            _MADE_FOLDERS.pop().rmdir()
        except OSError:  # not empty (something was written there), or gone already
            pass
