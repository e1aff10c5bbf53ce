"""Pipeline benchmark: wall time and peak memory of `dvc repro`, per stage, at two sizes.

Runs in a temporary copy of this project (git + DVC), so the working tree is untouched:

1. full `dvc repro` on the 41,188-row file, then a no-op `dvc repro`;
2. every stage again, one by one, for per-stage seconds, rows/s and peak RSS;
3. the same pipeline on a 1,000,000-row input resampled from the real file
   (`data.resample_rows`; the duplicate check is off there, since resampling repeats rows).

Usage: python benchmarks/pipeline_bench.py [--rows 1000000] [--skip-large]
Targets: full pipeline <= 60 s, no-op <= 2 s, 1M rows <= 300 s with peak RSS <= 4 GB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "validate", "featurize", "train", "evaluate"]


@dataclass
class Measurement:
    label: str
    seconds: float
    peak_rss_mb: float
    rows: int | None = None

    @property
    def rows_per_s(self) -> str:
        return f"{self.rows / self.seconds:,.0f}" if self.rows else ""


def measure(
    label: str, cmd: list[str], cwd: Path, env: dict[str, str], rows: int | None = None
) -> Measurement:
    """Wall time and peak RSS of a command and all the processes it waited for."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{output}")
    return Measurement(label, seconds, usage.ru_maxrss / 1024, rows)


def copy_project(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    for rel in files:
        if not rel or not (REPO / rel).is_file() or rel.startswith("tests/"):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        [
            "git",
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@invalid",
            "commit",
            "-qm",
            "bench",
        ],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)


def set_params(project: Path, **dotted: object) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in dotted.items():
        node = params
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def stage_rows(project: Path) -> dict[str, int]:
    import json

    ingest = json.loads((project / "reports/ingest.json").read_text())
    validation = json.loads((project / "reports/validation.json").read_text())
    return {
        "ingest": ingest["rows"],
        "validate": validation["rows_in"],
        "featurize": validation["rows_valid"],
        "train": 0,
        "evaluate": 0,
    }


def per_stage(project: Path, env: dict[str, str]) -> list[Measurement]:
    import pandas as pd

    out = []
    for stage in STAGES:
        rows = (
            stage_rows(project).get(stage)
            if (project / "reports/validation.json").exists()
            else None
        )
        if stage == "train":
            rows = len(pd.read_parquet(project / "data/features/train.parquet"))
        if stage == "evaluate":
            rows = len(pd.read_parquet(project / "data/features/test.parquet"))
        out.append(measure(f"  {stage}", ["plumbline", stage], project, env, rows))
    return out


def table(title: str, rows: list[Measurement]) -> str:
    lines = [title, f"{'step':<34}{'seconds':>10}{'rows/s':>14}{'peak RSS MB':>14}"]
    for m in rows:
        lines.append(f"{m.label:<34}{m.seconds:>10.2f}{m.rows_per_s:>14}{m.peak_rss_mb:>14.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="plumbline-bench-") as tmp:
        project = Path(tmp) / "plumbline"
        copy_project(project)
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        env.setdefault("OMP_NUM_THREADS", "1")

        # Warm the MLflow store once so its one-time schema migration is not billed to a stage.
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import mlflow; mlflow.set_tracking_uri("
                f"'{env['MLFLOW_TRACKING_URI']}'); mlflow.search_experiments()",
            ],
            env=env,
            check=True,
            capture_output=True,
        )

        full = measure("dvc repro (41,188 rows, cold)", ["dvc", "repro", "--force"], project, env)
        noop = measure("dvc repro (no-op)", ["dvc", "repro"], project, env)
        stages = per_stage(project, env)
        report = [table("Default data (41,188 rows)", [full, noop, *stages])]
        report.append(
            f"targets: full <= 60 s: {'PASS' if full.seconds <= 60 else 'FAIL'} "
            f"({full.seconds:.1f} s); no-op <= 2 s: {'PASS' if noop.seconds <= 2 else 'FAIL'} "
            f"({noop.seconds:.2f} s)"
        )
        if not args.skip_large:
            set_params(project, data__resample_rows=args.rows, validate__check_duplicates=False)
            large = measure(f"dvc repro ({args.rows:,} rows)", ["dvc", "repro"], project, env)
            large_stages = per_stage(project, env)
            report.append("")
            report.append(table(f"Resampled to {args.rows:,} rows", [large, *large_stages]))
            peak = max(m.peak_rss_mb for m in [large, *large_stages])
            report.append(
                f"targets: {args.rows:,} rows <= 300 s: "
                f"{'PASS' if large.seconds <= 300 else 'FAIL'} ({large.seconds:.1f} s); "
                f"peak RSS <= 4096 MB: {'PASS' if peak <= 4096 else 'FAIL'} ({peak:.0f} MB)"
            )
        print("\n".join(report))


if __name__ == "__main__":
    main()
