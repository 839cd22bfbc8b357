"""The one base class of every error a user can cause and fix: bad data, configs, selectors, model paths,
run folders. The CLI prints such an error as one `error:` line and exits with 2; any other exception
is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the input (a file, a config key, a path, a selector): the message names the place and
    what was expected."""
