"""Errors the user can act on: the CLI prints their message as one line and exits with 2."""

from avsf.config import ConfigError


class UserError(Exception):
    """Bad input (a path, a file, a parameter): the message says what was wrong and what to do."""


USER_ERRORS = (UserError, ConfigError)
