"""Errors a user can act on: the CLI prints their message and exits 1, without a traceback."""

from __future__ import annotations


def _user_errors() -> tuple[type[Exception], ...]:
    from plumbline.model import ModelLoadError
    from plumbline.stages.featurize import SplitError
    from plumbline.stages.ingest import SourceError
    from plumbline.stages.validate import ValidationFailed

    return (SourceError, ValidationFailed, SplitError, ModelLoadError, FileNotFoundError)


USER_ERRORS = _user_errors()
