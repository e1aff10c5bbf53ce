"""Errors a user can act on: the CLI prints their message and exits 1, without a traceback."""

from __future__ import annotations

from pathlib import Path


class PlumblineError(Exception):
    """Base of every error whose message tells the user what to fix (bad config, bad source,
    too many bad rows, a failed gate...). Anything else is a bug and keeps its traceback."""


class MissingInput(PlumblineError):
    """A file or folder the command needs is not there; the message says how to make it."""


def need(*paths: Path, hint: str = "run `dvc repro`") -> None:
    """Inputs that are missing are the user's to make: say which, and how."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise MissingInput(f"{', '.join(missing)} not found: {hint}")
