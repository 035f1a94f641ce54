"""Errors that describe a user's mistake (a bad config value, a missing file, an unknown method).

The `paperzoo` command prints these as one sentence and exits with code 2; everything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: the message names the bad value and what was expected."""


class ConfigError(UserError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class DataError(UserError, ValueError):
    """Input data is missing, truncated or malformed; the message names the file."""


def require(condition: bool, message: str) -> None:
    """Raise `ConfigError(message)` unless `condition` holds (for validating constructor arguments)."""
    if not condition:
        raise ConfigError(message)
