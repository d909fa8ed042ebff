"""Errors that reach the user of the command line or a config file."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad input, a missing file, a wrong flag.

    The message says what is wrong and, where it can, what to do next.  The CLI
    prints it without a traceback and exits with status 2.
    """
