"""Shrink an image's virtualenv after ``pip install`` (the Dockerfiles' build stages).

    python serve/slim_venv.py /opt/venv [--serving]

Always, for both images: the test suites that numpy, pandas, scipy, scikit-learn and pyarrow
ship inside their packages; files only a compiler reads (C and C++ sources and headers, Cython
sources); Arrow Flight (pyarrow's RPC framework; the project reads and writes Parquet files
only); debug symbols of the packages' own shared libraries (``strip --strip-unneeded``; the
libraries auditwheel vendors into ``<name>.libs/`` are left alone, since stripping those
patched files breaks them); identical copies of one library that the wheel could not ship as
symlinks.

With ``--serving`` (serve/Dockerfile), also:

* the bytecode pip compiled for every module: the server's processes write theirs to
  ``PYTHONPYCACHEPREFIX`` as they import (the serving image sets it), so a container compiles
  what it uses once, at its first start;
* google-auth, cryptography and their helpers, which only Databricks authentication in
  databricks-sdk imports (mlflow-skinny needs the ``databricks`` package itself: ``import
  mlflow`` looks for ``databricks.agents``).

What is removed depends on these packages' layout: ``TESTED`` pins the versions it was checked
with, and tests/unit/serving/test_slim_venv.py fails when requirements.lock moves any of them,
so an upgrade is checked again (``make test-stack`` serves from the slimmed image).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

TESTED = {
    "pyarrow": "25.0.1",
    "mlflow-skinny": "3.17.2",
    "databricks-sdk": "0.162.0",
    "google-auth": "2.63.0",
}
SERVING_DROPPED = ("google-auth", "cryptography", "cffi", "pycparser", "pyasn1", "pyasn1-modules")
DROPPED_GLOBS = (
    "pyarrow/libarrow_flight.so*",
    "pyarrow/libarrow_python_flight.so*",
    "pyarrow/_flight.*.so",
    "pyarrow/flight.py",
    "pyarrow/include",
    "numpy/_core/include",
)
TEST_PACKAGES = ("numpy", "pandas", "scipy", "sklearn", "pyarrow")
BUILD_ONLY_SUFFIXES = (".c", ".cc", ".cpp", ".h", ".hpp", ".pyx", ".pxd", ".pxi")


def size_mb(path: Path) -> float:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def drop_distributions(site: Path, names: tuple[str, ...]) -> list[str]:
    """Remove installed distributions by their RECORD (what ``pip uninstall`` does)."""
    dropped = []
    for dist in metadata.distributions(path=[str(site)]):
        name = dist.metadata["Name"].lower().replace("_", "-")
        if name not in names:
            continue
        for file in dist.files or []:
            _remove(Path(dist.locate_file(file)))
        dropped.append(name)
    for empty in sorted(site.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    return sorted(dropped)


def link_duplicates(directory: Path) -> int:
    """Replace byte-identical copies of a shared library in one folder by symlinks."""
    by_digest: dict[str, Path] = {}
    linked = 0
    for path in sorted(directory.glob("*.so*"), key=lambda p: (len(p.name), p.name)):
        if path.is_symlink() or not path.is_file():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        first = by_digest.setdefault(digest, path)
        if first != path:
            path.unlink()
            path.symlink_to(first.name)
            linked += 1
    return linked


def slim(venv: Path, serving: bool) -> None:
    (site,) = venv.glob("lib/python3*/site-packages")
    before = size_mb(venv)
    if serving:
        print("dropped:", ", ".join(drop_distributions(site, SERVING_DROPPED)))
    for pattern in DROPPED_GLOBS:
        for path in site.glob(pattern):
            _remove(path)
    for package in TEST_PACKAGES:
        for tests in sorted(site.glob(f"{package}/**/tests")):
            _remove(tests)
    for path in list(site.rglob("*")):
        if path.is_file() and path.suffix in BUILD_ONLY_SUFFIXES:
            path.unlink()
        elif serving and path.is_dir() and path.name == "__pycache__":
            shutil.rmtree(path, ignore_errors=True)
    libraries = [
        str(p)
        for p in site.rglob("*.so*")
        if p.is_file()
        and not p.is_symlink()
        and not any(part.endswith(".libs") for part in p.parts)
    ]
    subprocess.run(["strip", "--strip-unneeded", *libraries], check=True)
    linked = link_duplicates(site / "pyarrow") if (site / "pyarrow").is_dir() else 0
    print(
        f"{venv}: {before:.0f} MB -> {size_mb(venv):.0f} MB "
        f"({len(libraries)} libraries stripped, {linked} copies linked)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("--serving", action="store_true", help="serve/Dockerfile's extra cuts")
    args = parser.parse_args(argv)
    slim(args.venv, args.serving)
    return 0


if __name__ == "__main__":
    sys.exit(main())
