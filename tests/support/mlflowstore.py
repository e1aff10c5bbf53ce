"""Empty MLflow stores for test projects, each a copy of one that MLflow created this session.

A new SQLite store runs MLflow's schema migrations on its first use: the same seconds again in
every test project. Each test process creates one empty store with MLflow's own code and copies
it. Stores that a test must see created (the fresh clones of test_reproducible.py, the missing
stores of the serving tests) still start without one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
from functools import cache
from pathlib import Path


@cache
def _empty_store() -> Path:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    directory = Path(tempfile.mkdtemp(prefix="plumbline-mlflow-empty-"))
    atexit.register(shutil.rmtree, directory, True)
    path = directory / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{path}", str(directory / "mlruns"))
    store.engine.dispose()
    return path


def new_store(path: Path) -> str:
    """An empty MLflow store at ``path`` (its Default experiment's artifacts in mlruns/ beside
    it, as MLflow puts them when started from that directory); returns its URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_empty_store(), path)
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                (str(path.parent / "mlruns" / "0"),),
            )
    finally:
        db.close()
    return f"sqlite:///{path}"
