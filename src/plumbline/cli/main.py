"""The ``plumbline`` command: one subcommand per pipeline stage (what dvc.yaml runs).

Errors that a user can fix (bad config, unreadable source, too many bad rows) print one
clear message and exit with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from plumbline.core.contract import Contract, load_contract
from plumbline.core.errors import MissingInput, PlumblineError
from plumbline.core.paths import Layout, layout, project_root
from plumbline.core.timing import spent
from plumbline.monitoring.settings import Params, load_params

log = logging.getLogger("plumbline")


class StageContext:
    def __init__(self, params_path: Path | None) -> None:
        self.root = project_root()
        self.params: Params = load_params(params_path or self.root / "params.yaml")
        self.contract: Contract = load_contract(self.params.resolve(self.params.data.contract))
        self.paths: Layout = layout(self.root)


def need(*paths: Path, hint: str = "run `dvc repro`") -> None:
    """Stage inputs that are missing are the user's to make: say which, and how."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise MissingInput(f"{', '.join(missing)} not found: {hint}")


def cmd_ingest(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.pipeline import ingest

    record = ingest.run(
        ctx.params.data, ctx.contract, ctx.root, ctx.paths.ingested, ctx.paths.ingest_record
    )
    return (
        f"ingested {record.rows} rows from {record.source.get('kind')} source; "
        f"{record.cells_failing_type} cells failed type coercion"
    )


def cmd_validate(ctx: StageContext, args: argparse.Namespace) -> str:
    import pandas as pd

    from plumbline.pipeline import validate

    need(ctx.paths.ingested, hint="run `plumbline ingest` (or `dvc repro`) first")
    frame = pd.read_parquet(ctx.paths.ingested)
    cfg = ctx.params.validate_
    report = validate.run(
        frame,
        ctx.contract,
        cfg.max_bad_fraction,
        cfg.check_duplicates,
        ctx.paths.valid,
        ctx.paths.quarantine,
        ctx.paths.validation_report,
        ctx.paths.expectation_suite,
        ctx.paths.data_docs,
    )
    return (
        f"{report.rows_in} rows in: {report.rows_valid} valid, {report.rows_quarantined} "
        f"quarantined ({report.quarantined_fraction:.2%})"
    )


def cmd_featurize(ctx: StageContext, args: argparse.Namespace) -> str:
    import pandas as pd

    from plumbline.pipeline import featurize

    need(ctx.paths.valid, hint="run `plumbline validate` (or `dvc repro`) first")
    frame = pd.read_parquet(ctx.paths.valid)
    split = featurize.run(
        frame,
        ctx.contract,
        ctx.params.featurize,
        ctx.paths.train_split,
        ctx.paths.test_split,
        ctx.paths.transformer,
        ctx.paths.reference_profile,
    )
    return f"split ({split.order}): {len(split.train)} train rows, {len(split.test)} test rows"


def cmd_train(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.pipeline import train

    need(ctx.paths.train_split, ctx.paths.transformer, hint="run `plumbline featurize` first")
    card, record = train.run(ctx.params, ctx.contract, ctx.paths)
    return f"trained {card.estimator} at commit {record.git_commit or '(not in git)'}"


def cmd_evaluate(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.pipeline import evaluate

    need(ctx.paths.model, ctx.paths.test_split, hint="run `plumbline train` first")
    metrics = evaluate.run(ctx.params, ctx.contract, ctx.paths, mlflow_logging=not args.no_mlflow)
    return json.dumps({k: round(v, 4) for k, v in metrics.items()})


def cmd_check_config(ctx: StageContext, args: argparse.Namespace) -> str:
    features = ctx.contract.feature_columns(ctx.params.featurize.exclude_columns)
    return f"params.yaml and contract {ctx.contract.name!r} are valid; {len(features)} features"


# --- promotion: gate, registry, pull-request report ------------------------------------------


def cmd_gate(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.model.verdict import GATE_FILE, GateFailed
    from plumbline.promotion import gate

    if getattr(args, "retrain", False):
        from plumbline.promotion import retrain_gate

        result = retrain_gate.run(ctx.params, ctx.contract, ctx.paths)
    else:
        result = gate.run(ctx.params, ctx.contract, ctx.paths)
    if not result.passed:
        raise GateFailed(result.failure_message())
    return f"{result.summary()}; wrote {GATE_FILE}"


def cmd_promote(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.model.verdict import GATE_FILE, GateResult
    from plumbline.pipeline.model_card import MODEL_CARD_FILE, attach
    from plumbline.promotion.registry import CHALLENGER, CHAMPION, Registry

    verdict = GateResult.read(ctx.paths / GATE_FILE)
    registry = Registry.from_params(ctx.params, ctx.root)
    done = registry.promote(ctx.params, ctx.paths, verdict, args.challenger_only)
    card = attach(registry.client, registry.name, done.version, ctx.paths / MODEL_CARD_FILE)
    what = (
        f"{'found' if done.reused else 'registered'} {registry.name!r} version "
        f"{done.version}; {CHALLENGER} -> {done.version}; model card: {card or 'none'}"
    )
    if args.challenger_only:
        return (
            f"{what}; {CHAMPION} stays "
            f"{'version ' + done.champion_before if done.champion_before else 'unset'} "
            f"(challenger only; gate {'passed' if done.passed else 'failed'})"
        )
    if done.champion_moved:
        return f"{what}; {CHAMPION} -> {done.version} (was {done.champion_before or 'none'})"
    if done.passed:
        return f"{what}; version {done.version} already is {CHAMPION}"
    return (
        f"{what}; gate failed, {CHAMPION} stays "
        f"{'version ' + done.champion_before if done.champion_before else 'unset'}"
    )


def cmd_rollback(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.promotion.registry import CHAMPION, Registry

    registry = Registry.from_params(ctx.params, ctx.root)
    event = registry.rollback(args.reason)
    return (
        f"{registry.name!r}: {CHAMPION} rolled back from version {event.from_version} "
        f"to version {event.to_version}"
    )


def cmd_models(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.pipeline.model_card import CARD_TAG
    from plumbline.promotion.registry import CHAMPION, Registry, history_lines, versions_table

    registry = Registry.from_params(ctx.params, ctx.root)
    rows = registry.versions()
    if not rows:
        return f"registered model {registry.name!r} has no versions in {registry.uri}"
    print(versions_table(rows))
    events = registry.history()
    if events:
        print(f"\n{CHAMPION} history (latest last):")
        print("\n".join(history_lines(events)))
    champion = registry.alias_version(CHAMPION)
    card = next((r.tags.get(CARD_TAG) for r in rows if r.version == champion), None)
    if card:
        print(f"\n{CHAMPION} model card: {card} (also the version's description)")
    return (
        f"{len(rows)} version{'s' if len(rows) != 1 else ''} of {registry.name!r}; "
        f"{CHAMPION}: "
        f"{'version ' + champion if champion else 'none'}"
    )


def cmd_report(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.promotion import pr_report

    done = pr_report.write(ctx.paths, base=args.base, output=args.output)
    against = f"against {done.base.ref}" if done.base else "with no base branch"
    gate = {None: "not run", True: "passed", False: "failed"}[done.gate_passed]
    plots = len(done.images)
    return f"wrote {done.path} ({against}; gate {gate}; {plots} plot{'s' if plots != 1 else ''})"


def cmd_lineage(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.promotion.lineage import LineageIncomplete, trace_request, trace_version
    from plumbline.promotion.registry import Registry

    if (args.version is None) == (args.request_id is None):
        raise MissingInput("give a model VERSION or --request-id ID (one of them)")
    from plumbline.monitoring.workspace import SNAPSHOT_DIR

    registry = Registry.from_params(ctx.params, ctx.root)
    # Retrains of a project outside git commit to a snapshot repository in the state dir.
    repos = [ctx.root, ctx.params.resolve(ctx.params.monitor.state_dir) / SNAPSHOT_DIR]
    if args.request_id is not None:
        log_dir = ctx.params.resolve(
            args.log_dir
            or ctx.params.monitor.prediction_log_dir
            or ctx.params.serve.prediction_log.dir
        )
        chain = trace_request(
            lambda name: Registry(name, registry.uri), log_dir, args.request_id, repos
        )
        what = f"request {args.request_id}"
    else:
        chain = trace_version(registry, args.version, repos)
        what = f"{registry.name!r} version {args.version}"
    print(json.dumps(chain.to_json(), indent=2) if args.json else chain.text())
    if not chain.complete:
        raise LineageIncomplete(
            f"the lineage of {what} is incomplete; missing: "
            + "; ".join(f"{link.name} ({link.missing})" for link in chain.missing)
        )
    return f"the lineage of {what} is complete ({len(chain.links)} links)"


def cmd_explain(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.cli import explain

    return explain.run(ctx.params, ctx.contract, ctx.paths, args)


# --- monitoring: the monitor service, drift report, retraining, replay ------------------------


def cmd_monitoring(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.cli import monitoring

    return monitoring.run(ctx, args)


def cmd_rollout(ctx: StageContext, args: argparse.Namespace) -> str:
    from plumbline.cli import rollout

    return rollout.run(ctx, args)


COMMANDS: dict[str, tuple[Callable[[StageContext, argparse.Namespace], str], str]] = {
    "ingest": (cmd_ingest, "read the configured source into typed Parquet"),
    "validate": (cmd_validate, "run the contract's GX suite, quarantine failing rows"),
    "featurize": (cmd_featurize, "time-ordered split, fit the transformer, profile"),
    "train": (cmd_train, "fit the model, save models/model.skops and its lineage record"),
    "evaluate": (cmd_evaluate, "metrics and plots on the test split; log the run to MLflow"),
    "check-config": (cmd_check_config, "validate params.yaml and the contract, then exit"),
    "gate": (cmd_gate, "check reports/metrics.json against params and the champion"),
    "promote": (cmd_promote, "register the candidate; move champion if the gate passed"),
    "rollback": (cmd_rollback, "move champion back to the previous champion"),
    "models": (cmd_models, "list registered versions with aliases, metrics, verdicts"),
    "report": (cmd_report, "write report.md: gate, metrics/params diff, plots"),
    "lineage": (cmd_lineage, "a version's or a prediction's chain: run, commit, params, data"),
    "explain": (cmd_explain, "per-row contributions of a Parquet/CSV file of records"),
    "monitor": (cmd_monitoring, "run the monitor: feedback, drift/live metrics, retrain trigger"),
    "drift-report": (cmd_monitoring, "write the drift + live-performance report (md, PNG)"),
    "retrain": (cmd_monitoring, "retrain on the newest labelled window, then gate and promote"),
    "replay": (cmd_monitoring, "send the later part of the data as traffic, then its labels"),
    "rollout": (cmd_rollout, "challenger beside the champion: status | shadow | canary | off"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plumbline", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params file (default: params.yaml at the project root)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (handler, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == "evaluate":
            p.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")
        if name == "gate":
            p.add_argument(
                "--retrain",
                action="store_true",
                help="the automatic retrain's gate: challenger vs re-scored champion on the "
                "same newest rows, paired bootstrap (retrain.comparison)",
            )
        if name == "promote":
            p.add_argument(
                "--challenger-only",
                action="store_true",
                help="point challenger at the candidate, leave champion alone (for a rollout)",
            )
        if name == "rollback":
            p.add_argument(
                "--reason", default="manual rollback", help="why (kept in the promotion history)"
            )
        if name == "report":
            p.add_argument(
                "--base",
                default=None,
                help="git ref to compare with (default: the PR base branch, "
                "else origin/main or main)",
            )
            p.add_argument(
                "--output",
                type=Path,
                default=None,
                help="where to write (default: report.md at the project root)",
            )
        if name == "lineage":
            p.add_argument("version", nargs="?", default=None, help="registered model version")
            p.add_argument("--request-id", default=None, help="a prediction's request id")
            p.add_argument(
                "--log-dir",
                type=Path,
                default=None,
                help="prediction log (default: monitor.prediction_log_dir, else "
                "serve.prediction_log.dir)",
            )
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "explain":
            from plumbline.cli.explain import add_arguments as explain_arguments

            explain_arguments(p)
        if handler is cmd_monitoring:
            from plumbline.cli.monitoring import add_arguments

            add_arguments(name, p)
        if handler is cmd_rollout:
            from plumbline.cli import rollout

            rollout.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("great_expectations", "mlflow", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handler, _ = COMMANDS[args.command]
    started = time.perf_counter()
    try:
        ctx = StageContext(args.params)
        summary = handler(ctx, args)
    except PlumblineError as err:
        print(f"plumbline {args.command}: error: {err}", file=sys.stderr)
        return 1
    took = f"{time.perf_counter() - started:.1f}s"
    phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in spent().items())
    # Machine-readable output (--json) keeps stdout for the document alone.
    out = sys.stderr if getattr(args, "json", False) else sys.stdout
    print(
        f"plumbline {args.command}: {summary} ({took}{'; ' + phases if phases else ''})",
        file=out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
