"""The programs the deployment starts are ``plumbline`` subcommands: serve/app.py (the serving
image's command) is a thin wrapper of ``plumbline serve``, which keeps one BLAS/OpenMP thread
per server process however it is started, and reads only the serving part of params.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.paths import APP, REPO
from support.serve import Server

from plumbline.cli.serving import THREAD_VARIABLES
from plumbline.core import yamlfile
from plumbline.core.settings import ConfigError


def _python(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_app_is_the_plumbline_serve_command() -> None:
    wrapper = _python(str(APP), "--help")
    command = _python("-m", "plumbline", "serve", "--help")
    assert wrapper.returncode == command.returncode == 0, wrapper.stderr + command.stderr
    assert wrapper.stdout == command.stdout
    assert wrapper.stdout.startswith("usage: plumbline serve ")
    # serve/app.py keeps its own place for --params, after the other options.
    done = _python(str(APP), "--port", "8000", "--params", "no-such-params.yaml")
    assert done.returncode == 1
    assert done.stderr == "plumbline serve: error: no-such-params.yaml: not found\n"


def test_serve_app_sets_the_thread_variables_before_numpy_loads() -> None:
    script = f"""
import json, os, runpy, sys
from importlib.abc import MetaPathFinder

seen = {{}}

class Watch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" and not seen:
            seen.update({{v: os.environ.get(v) for v in {THREAD_VARIABLES!r}}})
        return None

sys.meta_path.insert(0, Watch())
sys.argv = [{str(APP)!r}, "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stop:
    assert stop.code == 0, stop.code
print("SEEN", json.dumps(seen))
"""
    done = _python("-c", script)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.rpartition("SEEN ")[2])
    # Parsing the arguments loads no numpy at all (the test below); if it ever does, the
    # variables must already be set then.
    assert seen in ({}, dict.fromkeys(THREAD_VARIABLES, "1")), "numpy was imported before"


def test_the_plumbline_command_loads_no_numpy_to_parse_its_arguments() -> None:
    """So that `plumbline serve`'s thread variables act when the BLAS loads."""
    done = _python(
        "-c",
        "import sys, plumbline.cli.main as m; m.build_parser(); "
        "print(sorted(k for k in ('numpy', 'pandas', 'sklearn') if k in sys.modules))",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_plumbline_serve_limits_a_blas_that_was_loaded_before_it() -> None:
    """`plumbline serve`: the CLI's other commands may import numpy before serve runs."""
    script = """
import json
import numpy
from threadpoolctl import threadpool_info
from plumbline.cli.serving import one_thread_per_process

limited = one_thread_per_process()
print(json.dumps([limited, [i["num_threads"] for i in threadpool_info()]]))
"""
    done = _python("-c", script)
    assert done.returncode == 0, done.stderr
    limited, threads = json.loads(done.stdout)
    assert limited is True
    assert threads and set(threads) == {1}
    # A thread setting of the user's wins.
    done = _python("-c", script, OMP_NUM_THREADS="2")
    assert json.loads(done.stdout)[0] is False


def test_plumbline_serve_needs_only_the_serving_part_of_params(tmp_path: Path) -> None:
    from plumbline.monitoring.settings import load_params

    server = Server(
        tmp_path, f"sqlite:///{tmp_path / 'none.db'}", fallback_artifact=None, poll_interval_s=30
    )
    raw = yamlfile.safe_load(server.params.read_text())
    raw["monitor"]["interval_s"] = "soon"  # the monitor's section: not the server's
    server.params.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match=r"monitor\.interval_s"):
        load_params(server.params)
    with server:
        server.wait("/health")
        assert server.get("/ready").status_code == 503  # no model anywhere: alive, not ready
        assert server.stop() == 0
    log = server.log()
    assert "plumbline serve: stopped" in log
    assert "Traceback" not in log
