"""Pipeline benchmark: wall time and peak memory of `dvc repro`, per stage, at two sizes.

Runs in a temporary copy of this project (git + DVC), so the working tree is untouched:

1. full `dvc repro` on the 41,188-row file, then a no-op `dvc repro`, beside the floor: a
   five-stage toy DVC pipeline (one small file per stage) in the same run, whose no-op
   `dvc repro` is what DVC itself costs;
2. every stage again, one by one, for per-stage seconds, rows/s and peak RSS, split into
   imports (`python -X importtime`), tracking (the stage's `mlflow` phase) and the rest;
3. the same pipeline on a 1,000,000-row input resampled from the real file
   (`data.resample_rows`; the duplicate check is off there, since resampling repeats rows);
4. with ``--baseline REV``: the cold runs of 1 and 3 again for the project as of commit REV
   (its own code, params and data, on this venv's packages), alternating with this tree's
   runs, best of two each, so that both see the same machine.

Usage: python benchmarks/pipeline_bench.py [--rows 1000000] [--skip-large] [--baseline REV]
Targets: full pipeline <= 25 s, no-op <= 1.5x the toy's no-op, 1M rows <= 300 s with peak RSS
<= 4 GB.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from plumbline.core import yamlfile

REPO = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "validate", "featurize", "train", "evaluate"]


@dataclass
class Measurement:
    label: str
    seconds: float
    peak_rss_mb: float
    rows: int | None = None
    imports_s: float | None = None
    tracking_s: float | None = None

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
    result = Measurement(label, seconds, usage.ru_maxrss / 1024, rows)
    if "-X" in cmd:
        result.imports_s = import_seconds(output)
        tracking = re.search(r"mlflow (\d+\.\d+)s\)", output)
        result.tracking_s = float(tracking.group(1)) if tracking else 0.0
    return result


def import_seconds(importtime: str) -> float:
    """Total of `-X importtime`'s top-level imports (cumulative microseconds), in seconds."""
    total = 0
    for line in importtime.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \| {1,2}(\S.*)$", line)
        if found:
            total += int(found.group(1))
    return total / 1e6


TOY_STAGE = """  step{i}:
    cmd: cat {dep} > out{i}.txt && echo {i} >> out{i}.txt
    deps: [{dep}]
    params: [step{i}]
    outs: [out{i}.txt]
"""


def toy_project(dest: Path, env: dict[str, str]) -> None:
    """Five chained stages, each with a dep, a params section and an output: DVC's own cost."""
    dest.mkdir(parents=True)
    (dest / "in.txt").write_text("0")
    deps = ["in.txt", *(f"out{i}.txt" for i in range(1, 5))]
    stages = "".join(TOY_STAGE.format(i=i, dep=dep) for i, dep in enumerate(deps, start=1))
    (dest / "dvc.yaml").write_text("stages:\n" + stages)
    (dest / "params.yaml").write_text("".join(f"step{i}: {{n: {i}}}\n" for i in range(1, 6)))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)


def copy_project(dest: Path, rev: str | None = None) -> None:
    """This working tree (tracked and untracked files), or commit ``rev``, as a new repo."""
    dest.mkdir(parents=True)
    if rev is None:
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
    else:
        archive = subprocess.run(
            ["git", "archive", rev], cwd=REPO, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
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
    params = yamlfile.safe_load(path.read_text())
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
        cmd = [sys.executable, "-X", "importtime", "-m", "plumbline", stage]
        out.append(measure(f"  {stage}", cmd, project, env, rows))
    return out


def table(title: str, rows: list[Measurement]) -> str:
    head = f"{'step':<34}{'seconds':>9}{'imports':>9}{'mlflow':>8}{'rest':>8}"
    lines = [title, f"{head}{'rows/s':>12}{'peak RSS MB':>13}"]
    for m in rows:
        split = ""
        if m.imports_s is not None and m.tracking_s is not None:
            rest = m.seconds - m.imports_s - m.tracking_s
            split = f"{m.imports_s:>9.2f}{m.tracking_s:>8.2f}{rest:>8.2f}"
        else:
            split = " " * 25
        lines.append(
            f"{m.label:<34}{m.seconds:>9.2f}{split}{m.rows_per_s:>12}{m.peak_rss_mb:>13.0f}"
        )
    return "\n".join(lines)


def project_env(tmp: Path, project: Path, name: str) -> dict[str, str]:
    """The environment of one project's runs: its own code first on the path, its own store."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(project / "src")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / f'{name}-mlflow.db'}"
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
    return env


def best(runs: list[Measurement]) -> Measurement:
    return min(runs, key=lambda m: m.seconds)


def versus(what: str, ours: Measurement, baseline: Measurement, rev: str) -> str:
    return (
        f"{what}: {ours.seconds:.1f} s vs {baseline.seconds:.1f} s at {rev} = "
        f"{ours.seconds / baseline.seconds:.2f}x "
        f"({'no slower' if ours.seconds <= baseline.seconds else 'SLOWER'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="also run the project as of commit REV")
    args = parser.parse_args()
    rounds = 2 if args.baseline else 1

    with tempfile.TemporaryDirectory(prefix="plumbline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        project = tmp / "plumbline"
        copy_project(project)
        env = project_env(tmp, project, "plumbline")
        base_project = tmp / "baseline"
        base_env: dict[str, str] = {}
        if args.baseline:
            copy_project(base_project, args.baseline)
            base_env = project_env(tmp, base_project, "baseline")

        toy = tmp / "toy"
        toy_project(toy, env)
        toy_full = measure("toy: dvc repro (5 stages, cold)", ["dvc", "repro"], toy, env)
        # Cold runs alternate with the baseline's so that both see the same machine.
        fulls, base_fulls = [], []
        for _ in range(rounds):
            label = "dvc repro (41,188 rows, cold)"
            fulls.append(measure(label, ["dvc", "repro", "--force"], project, env))
            if args.baseline:
                cmd = ["dvc", "repro", "--force"]
                base_fulls.append(measure(label, cmd, base_project, base_env))
        full = best(fulls)
        # No-op runs alternate between the two projects for the same reason.
        noops, toy_noops = [], []
        for _ in range(3):
            noops.append(measure("dvc repro (no-op)", ["dvc", "repro"], project, env))
            toy_noops.append(measure("toy: dvc repro (no-op)", ["dvc", "repro"], toy, env))
        noop = best(noops)
        toy_noop = best(toy_noops)
        stages = per_stage(project, env)
        how = "best of 2, alternating with the baseline" if args.baseline else "one run"
        report = [
            table("Default data (41,188 rows)", [full, noop, toy_full, toy_noop, *stages]),
            f"(cold: {how}; no-op: best of 3 each, interleaved; imports from -X importtime, "
            "mlflow = the stage's MLflow phase, rest = start-up and work)",
        ]
        ratio = noop.seconds / toy_noop.seconds
        report.append(
            f"targets: full <= 25 s: {'PASS' if full.seconds <= 25 else 'FAIL'} "
            f"({full.seconds:.1f} s); no-op <= 1.5x the toy's: "
            f"{'PASS' if ratio <= 1.5 else 'FAIL'} ({noop.seconds:.2f} s vs "
            f"{toy_noop.seconds:.2f} s = {ratio:.2f}x)"
        )
        if args.baseline:
            report.append(versus("41,188 rows, cold", full, best(base_fulls), args.baseline))
        if not args.skip_large:
            label = f"dvc repro ({args.rows:,} rows)"
            larges, base_larges = [], []
            for target in [project, base_project] if args.baseline else [project]:
                set_params(target, data__resample_rows=args.rows, validate__check_duplicates=False)
            for _ in range(rounds):
                larges.append(measure(label, ["dvc", "repro", "--force"], project, env))
                if args.baseline:
                    cmd = ["dvc", "repro", "--force"]
                    base_larges.append(measure(label, cmd, base_project, base_env))
            large = best(larges)
            large_stages = per_stage(project, env)
            report.append("")
            report.append(table(f"Resampled to {args.rows:,} rows", [large, *large_stages]))
            peak = max(m.peak_rss_mb for m in [large, *large_stages])
            report.append(
                f"targets: {args.rows:,} rows <= 300 s: "
                f"{'PASS' if large.seconds <= 300 else 'FAIL'} ({large.seconds:.1f} s); "
                f"peak RSS <= 4096 MB: {'PASS' if peak <= 4096 else 'FAIL'} ({peak:.0f} MB)"
            )
            if args.baseline:
                rows = f"{args.rows:,} rows"
                report.append(versus(rows, large, best(base_larges), args.baseline))
        print("\n".join(report))


if __name__ == "__main__":
    main()
