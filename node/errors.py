"""Errors that reach the user of the command line or a config file."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad input, a missing file, a wrong flag.

    The message says what is wrong and, where it can, what to do next.  The CLI
    prints it without a traceback and exits with status 2.
    """


class ListenError(UserError):
    """A server could not bind its address: in use, or not an address of this host."""

    def __init__(self, what: str, address: object, exc: OSError) -> None:
        super().__init__(
            f"{what} {address}: cannot listen: {exc.strerror or exc}; stop what holds the "
            "port or pick another one (on an address of this host)"
        )
