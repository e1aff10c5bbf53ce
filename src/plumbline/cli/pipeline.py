"""The pipeline's subcommands: the six DVC stages (what ``dvc.yaml`` runs) and check-config.

Every stage command is the same: load the pipeline's part of params.yaml and the contract, run
the stage (``plumbline.pipeline.<stage>.run``, which reads its inputs and writes its outputs)
and print a one-line summary of what it made. :data:`STAGES` says what differs per stage.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plumbline.cli.context import Command, Context

if TYPE_CHECKING:
    from plumbline.model.runrecord import RunRecord
    from plumbline.pipeline.evaluate import Evaluated
    from plumbline.pipeline.featurize import Featurized
    from plumbline.pipeline.ingest import Ingested
    from plumbline.pipeline.train import Trained
    from plumbline.pipeline.tune import Tuned
    from plumbline.pipeline.validate import Validated


def _no_options(args: argparse.Namespace) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Stage:
    """A DVC stage as a subcommand. ``summary`` turns what the stage's ``run`` returned into
    the line the CLI prints; ``options`` maps the command's own options (added to the parser
    by ``arguments``) to keyword arguments of ``run``."""

    name: str
    help: str
    summary: Callable[[Any], str]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    options: Callable[[argparse.Namespace], dict[str, Any]] = _no_options

    def run(self, ctx: Context, args: argparse.Namespace) -> str:
        from plumbline.core.contract import load_contract
        from plumbline.pipeline.settings import load_pipeline_params

        # Only the pipeline's sections: a serving or monitoring setting cannot stop a stage.
        params = load_pipeline_params(ctx.params_path)
        contract = load_contract(params.resolve(params.data.contract))
        # Imported here: `plumbline --help` and the other commands need no stage's libraries.
        stage = importlib.import_module(f"plumbline.pipeline.{self.name}")
        return self.summary(stage.run(params, contract, ctx.paths, **self.options(args)))

    def command(self) -> Command:
        return Command(self.name, self.help, self.run, self.arguments)


def _ingested(out: Ingested) -> str:
    record = out.record
    return (
        f"ingested {record.rows} rows from {record.source.get('kind')} source; "
        f"{record.cells_failing_type} cells failed type coercion"
    )


def _validated(out: Validated) -> str:
    report = out.report
    return (
        f"{report.rows_in} rows in: {report.rows_valid} valid, {report.rows_quarantined} "
        f"quarantined ({report.quarantined_fraction:.2%})"
    )


def _featurized(out: Featurized) -> str:
    return f"split ({out.order}): {len(out.train)} train rows, {len(out.test)} test rows"


def _tuned(out: Tuned) -> str:
    best = out.best
    if not best["tuned"]:
        return f"{best['estimator']}: not tuned (tune.trials is 0 or its space is empty)"
    folds = f"{best['folds']} {best['fold_order']} folds"
    trials = f"{best['completed']} complete trials, {best['pruned']} pruned"
    if best["best_trial"] is None:
        return (
            f"{best['estimator']}: no trial beat the values as written ({best['metric']} "
            f"{best['as_written_value']:.4f} over {folds}; {trials}); {json.dumps(best['params'])}"
        )
    return (
        f"{best['estimator']}: trial {best['best_trial']} has {best['metric']} "
        f"{best['best_value']:.4f} over {folds} (as written: {best['as_written_value']:.4f}; "
        f"{trials}); {json.dumps(best['params'])}"
    )


def _trained(out: tuple[Trained, RunRecord]) -> str:
    trained, record = out
    commit = record.git_commit or "(not in git)"
    return f"trained {trained.metadata.estimator} at commit {commit}"


def _evaluated(out: Evaluated) -> str:
    return json.dumps({k: round(v, 4) for k, v in out.metrics.items()})


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")


def _evaluate_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"mlflow_logging": not args.no_mlflow}


STAGES = [
    Stage("ingest", "read the configured source into typed Parquet", _ingested),
    Stage("validate", "run the contract's GX suite, quarantine failing rows", _validated),
    Stage("featurize", "time-ordered split, fit the transformer, profile", _featurized),
    Stage(
        "tune",
        "search the estimator's hyperparameters by cross-validation (Optuna)",
        _tuned,
        _evaluate_arguments,
        _evaluate_options,
    ),
    Stage("train", "fit the model, save models/model.skops and its lineage record", _trained),
    Stage(
        "evaluate",
        "metrics and plots on the test split; log the run to MLflow",
        _evaluated,
        _evaluate_arguments,
        _evaluate_options,
    ),
]


def cmd_check_config(ctx: Context, args: argparse.Namespace) -> str:
    features = ctx.contract.feature_columns(ctx.params.featurize.exclude_columns)
    return f"params.yaml and contract {ctx.contract.name!r} are valid; {len(features)} features"


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    from plumbline.model.settings import ESTIMATORS

    p.add_argument(
        "--estimators",
        default=",".join(ESTIMATORS),
        help="comma-separated, the reference first (default: all four, logistic_regression first)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--tuned-only", action="store_true", help="only the tuned candidates")
    which.add_argument(
        "--as-written-only", action="store_true", help="only the hyperparameters as written"
    )
    p.add_argument("--resamples", type=int, default=1000, help="paired-bootstrap resamples")


def cmd_compare(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.core.contract import load_contract
    from plumbline.pipeline.compare import run
    from plumbline.pipeline.settings import load_pipeline_params

    params = load_pipeline_params(ctx.params_path)
    contract = load_contract(params.resolve(params.data.contract))
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    result, report = run(
        params,
        contract,
        ctx.paths,
        estimators,
        tuned=not args.as_written_only,
        untuned=not args.tuned_only,
        resamples=args.resamples,
    )
    best = max(result.candidates, key=lambda c: c.metrics["roc_auc"])
    return (
        f"{len(result.candidates)} candidates on {result.rows} test rows; highest ROC AUC: "
        f"{best.name} {best.metrics['roc_auc']:.4f}; report: {report}"
    )


COMMANDS = [
    *(stage.command() for stage in STAGES),
    Command("check-config", "validate params.yaml and the contract, then exit", cmd_check_config),
    Command(
        "compare",
        "the estimators, as written and tuned, on the test split with bootstrap intervals",
        cmd_compare,
        _compare_arguments,
    ),
]
