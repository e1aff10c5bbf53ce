"""The pipeline's subcommands: the five DVC stages (what ``dvc.yaml`` runs) and check-config."""

from __future__ import annotations

import argparse
import json

from plumbline.cli.context import Command, Context, need


def cmd_ingest(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.pipeline import ingest

    record = ingest.run(
        ctx.params.data, ctx.contract, ctx.root, ctx.paths.ingested, ctx.paths.ingest_record
    )
    return (
        f"ingested {record.rows} rows from {record.source.get('kind')} source; "
        f"{record.cells_failing_type} cells failed type coercion"
    )


def cmd_validate(ctx: Context, args: argparse.Namespace) -> str:
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


def cmd_featurize(ctx: Context, args: argparse.Namespace) -> str:
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


def cmd_train(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.pipeline import train

    need(ctx.paths.train_split, ctx.paths.transformer, hint="run `plumbline featurize` first")
    card, record = train.run(ctx.params, ctx.contract, ctx.paths)
    return f"trained {card.estimator} at commit {record.git_commit or '(not in git)'}"


def cmd_evaluate(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.pipeline import evaluate

    need(ctx.paths.model, ctx.paths.test_split, hint="run `plumbline train` first")
    metrics = evaluate.run(ctx.params, ctx.contract, ctx.paths, mlflow_logging=not args.no_mlflow)
    return json.dumps({k: round(v, 4) for k, v in metrics.items()})


def cmd_check_config(ctx: Context, args: argparse.Namespace) -> str:
    features = ctx.contract.feature_columns(ctx.params.featurize.exclude_columns)
    return f"params.yaml and contract {ctx.contract.name!r} are valid; {len(features)} features"


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")


COMMANDS = [
    Command("ingest", "read the configured source into typed Parquet", cmd_ingest),
    Command("validate", "run the contract's GX suite, quarantine failing rows", cmd_validate),
    Command("featurize", "time-ordered split, fit the transformer, profile", cmd_featurize),
    Command("train", "fit the model, save models/model.skops and its lineage record", cmd_train),
    Command(
        "evaluate",
        "metrics and plots on the test split; log the run to MLflow",
        cmd_evaluate,
        _evaluate_arguments,
    ),
    Command("check-config", "validate params.yaml and the contract, then exit", cmd_check_config),
]
