"""Exception types raised by the library; the CLI turns each into one readable line."""


class MonkeyAnimError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(MonkeyAnimError):
    """An unknown preset name, or a config file that is missing or malformed."""


class CheckpointError(MonkeyAnimError):
    """A checkpoint that is missing, corrupt, or does not match its architecture."""


class InputError(MonkeyAnimError):
    """A user input (image, video, folder, option value) that cannot be used."""


class Interrupted(MonkeyAnimError):
    """Ctrl-C: raised from the SIGINT handler so outputs in progress are discarded."""
