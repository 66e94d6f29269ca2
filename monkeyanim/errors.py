"""Exception types raised by the library; the CLI turns each into one readable line."""


class MonkeyAnimError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(MonkeyAnimError):
    """An unknown preset name, or a config file that is missing or malformed."""


class CheckpointError(MonkeyAnimError):
    """A checkpoint that is missing, corrupt, or does not match its architecture."""


class InputError(MonkeyAnimError):
    """A user input (image, video, folder, option value) that cannot be used."""


class OutputError(MonkeyAnimError):
    """An output that could not be written: disk full, no permission, an I/O error."""


def cannot_write(path, exc: OSError) -> OutputError:
    """The one-line OutputError for ``exc`` raised while writing ``path``."""
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


class Interrupted(MonkeyAnimError):
    """Ctrl-C or kill: raised from the SIGINT / SIGTERM handler so outputs in progress are
    discarded; ``exit_code`` is the shell's convention, 128 + the signal's number."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
