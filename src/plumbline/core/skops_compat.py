"""Byte-reproducible skops files: the one place that reaches into skops' file layout.

``skops.io.dump`` writes a zip archive whose members carry the wall-clock time, and whose
names (and the ``__id__`` references inside ``schema.json``) are Python object ids or random
UUIDs, so two dumps of the same fitted object differ byte for byte. DVC hashes outputs, so
that would make every run look like a new model.

:func:`dump` writes the same objects as skops (skops itself still builds every member), then
rewrites the archive canonically: ids renumbered in the order ``schema.json`` lists them,
member files renamed to match, members stored in a fixed order with a fixed timestamp and
permissions. ``skops.io.load`` reads the result like any skops file.

Importing ``skops.io`` builds skops' default trusted list from
``sklearn.utils.all_estimators()``, which imports every scikit-learn module: a second of
start-up in every stage and server process, for a list plumbline never relies on (its loads
pass the complete :data:`plumbline.model.artifact.TRUSTED_TYPES`). :data:`sio` is ``skops.io``
imported
with that list made lazy: empty within :func:`explicit_trust` (:func:`load`,
:func:`untrusted_types`), and computed as skops computes it on first use anywhere else, so
other code in the process (logging a model to MLflow, say) sees skops' usual defaults. Import
``sio`` from here, not ``skops.io``, for the saving to hold.

This relies on skops internals (the member naming and the ``__id__`` / ``file`` keys of the
schema, and where the default list comes from) as of :data:`TESTED_SKOPS`;
``tests/unit/core/test_skops_compat.py`` fails loudly when an upgrade changes them.
"""

from __future__ import annotations

import contextvars
import importlib
import io
import json
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import sklearn.utils
import skops


class _DefaultEstimatorNames(list[str]):
    """skops' default trusted estimator names, made lazy: empty inside :func:`explicit_trust`
    (plumbline's own loads, which pass the complete list), else computed as skops does, on
    first use. skops reads it only as ``SKLEARN_ESTIMATOR_TYPE_NAMES + <internal types>``."""

    def names(self) -> list[str]:
        if _explicit.get():
            return []
        if not self:
            from skops.io._utils import get_type_name

            found = (get_type_name(cls) for _, cls in sklearn.utils.all_estimators())
            self.extend(name for name in found if name.startswith("sklearn."))
        return list(self)

    def __add__(self, other: list[str]) -> list[str]:  # type: ignore[override]
        return self.names() + list(other)


_explicit: contextvars.ContextVar[bool] = contextvars.ContextVar("explicit_trust", default=False)


@contextmanager
def explicit_trust() -> Iterator[None]:
    """Within this block skops trusts only the types a call names (no default estimators)."""
    reset = _explicit.set(True)
    try:
        yield
    finally:
        _explicit.reset(reset)


def _import_skops_io() -> ModuleType:
    lazy = _DefaultEstimatorNames()
    if "skops.io" not in sys.modules:
        discover = sklearn.utils.all_estimators
        sklearn.utils.all_estimators = lambda *args, **kwargs: []
        try:
            importlib.import_module("skops.io")
        finally:
            sklearn.utils.all_estimators = discover
    general = importlib.import_module("skops.io._general")
    trusted_types = importlib.import_module("skops.io._trusted_types")
    # _trusted_types bound the stand-in by name: give it the real discovery back.
    trusted_types.all_estimators = sklearn.utils.all_estimators  # type: ignore[attr-defined]
    if general.SKLEARN_ESTIMATOR_TYPE_NAMES:  # skops.io was imported before plumbline
        lazy.extend(general.SKLEARN_ESTIMATOR_TYPE_NAMES)
    general.SKLEARN_ESTIMATOR_TYPE_NAMES = lazy  # type: ignore[attr-defined]
    trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES = lazy  # type: ignore[attr-defined]
    return sys.modules["skops.io"]


sio = _import_skops_io()


def load(path: Path, trusted: list[str]) -> Any:
    with explicit_trust():
        return sio.load(path, trusted=trusted)


def untrusted_types(path: Path) -> list[str]:
    """Every type in the file beyond primitives, containers and numpy (no default estimators)."""
    with explicit_trust():
        return list(sio.get_untrusted_types(file=path))


TESTED_SKOPS = "0.16.0"
SCHEMA = "schema.json"
# The earliest time a zip entry can hold; any fixed value would do.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class SkopsLayoutChanged(RuntimeError):
    """The installed skops writes files this module does not know how to canonicalize."""


def _canonical_schema(
    node: Any, ids: dict[int, int], files: dict[str, str], members: set[str]
) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int) and not isinstance(value, bool):
                out[key] = ids.setdefault(value, len(ids) + 1)
            elif key == "file" and isinstance(value, str) and value in members:
                if value not in files:
                    suffix = Path(value).suffix
                    files[value] = f"{len(files) + 1:06d}{suffix}"
                out[key] = files[value]
            else:
                out[key] = _canonical_schema(value, ids, files, members)
        return out
    if isinstance(node, list):
        return [_canonical_schema(v, ids, files, members) for v in node]
    return node


def canonicalize(raw: bytes) -> bytes:
    """The canonical form of a skops archive (see the module docstring)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as src:
        names = src.namelist()
        if SCHEMA not in names:
            raise SkopsLayoutChanged(f"skops {skops.__version__} wrote no {SCHEMA}")
        members = set(names) - {SCHEMA}
        schema = json.loads(src.read(SCHEMA))
        files: dict[str, str] = {}
        canonical = _canonical_schema(schema, {}, files, members)
        unreferenced = members - set(files)
        if unreferenced:
            raise SkopsLayoutChanged(
                f"skops {skops.__version__} wrote members that schema.json does not reference "
                f"by a 'file' key: {sorted(unreferenced)[:3]}"
            )
        blobs = {files[name]: src.read(name) for name in members}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        entries = [(SCHEMA, json.dumps(canonical, indent=2).encode())]
        entries += sorted(blobs.items())
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            dst.writestr(info, data)
    return out.getvalue()


def dumps(obj: Any) -> bytes:
    return canonicalize(sio.dumps(obj))


def dump(obj: Any, path: Path) -> None:
    """``skops.io.dump``, byte for byte the same for the same fitted object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dumps(obj))
