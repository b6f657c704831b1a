"""Exceptions with a message a user can act on. The CLI prints them in one line."""

from __future__ import annotations


class HarnessError(Exception):
    """A user error: bad input, bad config, missing file. The CLI exits 2 with the message."""

    exit_code = 2


class InfrastructureError(HarnessError):
    """The environment failed (engine crashed, server unreachable). The CLI exits 3."""

    exit_code = 3
