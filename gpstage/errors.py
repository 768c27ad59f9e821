"""Errors that reach users: one line naming the problem and the fix, and the exit code to use.

Every command maps a :class:`GpstageError` to its ``exit_code`` (docs/design.md §9): 2 for bad input,
3 for storage or transfer failures. Anything else escaping a command is a bug.
"""

from __future__ import annotations


class GpstageError(Exception):
    """Base class: ``problem`` says what is wrong, ``fix`` says what to do about it."""

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return _one_line(f"{self.problem} — {self.fix}" if self.fix else self.problem)


def _one_line(text: str) -> str:
    """Control characters (a newline in a user's key, a NUL in a path) shown escaped: an error stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class BadInput(GpstageError):
    """The user's input (arguments, job spec, URL, configuration) cannot be used."""

    exit_code = 2


class MissingDependency(BadInput):
    """An optional package needed for a URL scheme or backend is not installed."""


class StorageError(GpstageError):
    """A storage operation failed: unreachable endpoint, missing bucket, denied, failed transfer."""

    exit_code = 3


class UnsafePath(StorageError):
    """A key or symlink would read or write outside the tree being synced."""
