"""The project's own error types: a user mistake becomes one clear line and exit code 2, never a traceback."""


class ToolkitError(Exception):
    """A problem the user can fix: a bad config value, a missing or broken file, unusable data."""


class ConfigError(ToolkitError):
    """An invalid configuration key or value."""


class DataError(ToolkitError):
    """A corpus that cannot be read or used."""


class CheckpointError(ToolkitError):
    """A checkpoint that cannot be read, or was written by an incompatible version."""


class TrainingError(ToolkitError):
    """Training cannot go on (the loss, the gradients or the dev loss became NaN or infinite)."""


class MissingExtraError(ToolkitError):
    """An optional part whose packages (a pip extra) are missing: the message says how to add them."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f'{feature} needs the {extra} extra ({module} is missing): pip install "mini-transformer[{extra}]"'
        )
