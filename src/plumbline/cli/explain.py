"""``plumbline explain``: per-row explanations of a file of records (Parquet or CSV).

The same :class:`plumbline.model.explain.Explainer` as ``POST /predict?explain=K`` scores and
explains the rows, so a batch run gives the online answer's numbers for the same record and
model. Writes one row per input record: its position, the probability, the log-odds, the base,
one ``contribution.<feature>`` column per feature and the top-K explanation as JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plumbline.cli.context import Command, Context
from plumbline.core.errors import MissingInput, PlumblineError

if TYPE_CHECKING:
    import pandas as pd

    from plumbline.core.contract import Contract
    from plumbline.core.paths import Layout
    from plumbline.monitoring.settings import Params


class ExplainInputError(PlumblineError):
    pass


def read_records(path: Path, contract: Contract, features: list[str], sep: str) -> pd.DataFrame:
    """The feature columns of a Parquet or CSV file, typed as the contract types them."""
    # Imported here, not at the top: every `plumbline` command imports this module.
    import numpy as np
    import pandas as pd

    if not path.is_file():
        raise MissingInput(f"{path} not found")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ExplainInputError(f"{path} lacks the model's feature columns {missing}")
    typed: dict[str, Any] = {}
    for name in features:
        spec = contract.columns[name]
        col = frame[name]
        if spec.is_numeric:
            values = pd.to_numeric(col.replace("", np.nan), errors="coerce")
            bad = values.isna() & col.notna() & (col.astype(str) != "")
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise ExplainInputError(
                    f"{path}: column {name!r} row {row}: {col.iloc[row]!r} is not a number"
                )
            typed[name] = values.astype("Int64" if spec.type == "integer" else "float64")
        else:
            typed[name] = col.astype(object).where(col.notna(), None)
    return pd.DataFrame(typed)


def run(params: Params, contract: Contract, paths: Layout, args: argparse.Namespace) -> str:
    from plumbline.model.artifact import load_model
    from plumbline.model.explain import ExplainUnsupported, explanation_table

    if args.version is not None:
        from plumbline.promotion.registry import Registry

        model = Registry.from_params(params, paths.root).load(args.version)
        which = f"registry version {args.version}"
    else:
        artifact = args.model or paths.model
        if not artifact.is_file():
            raise MissingInput(f"{artifact} not found: run `dvc repro` first")
        model = load_model(artifact)
        which = str(artifact)
    features = [str(c) for c in getattr(model, "feature_names_in_", [])] or (
        contract.feature_columns(params.featurize.exclude_columns)
    )
    if not 1 <= args.top <= len(features):
        raise ExplainInputError(f"--top must be from 1 to {len(features)}")
    frame = read_records(args.input, contract, features, args.sep)
    try:
        out = explanation_table(model, frame, features, args.top)
    except ExplainUnsupported as err:
        raise ExplainInputError(f"{which} cannot be explained: {err}") from None
    output: Path = args.output or args.input.with_name(args.input.stem + ".explained.parquet")
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".csv":
        out.to_csv(output, index=False)
    else:
        out.to_parquet(output, index=False)
    return f"explained {len(out)} rows with {which}; wrote {output}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="records: .parquet, or CSV (any other suffix)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write (.parquet or .csv; default: <input>.explained.parquet)",
    )
    parser.add_argument("--top", type=int, default=3, help="features in each row's explanation")
    parser.add_argument("--sep", default=",", help="CSV separator")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", type=Path, default=None, help="a skops model file")
    which.add_argument("--version", default=None, help="a registry version")


def cmd_explain(ctx: Context, args: argparse.Namespace) -> str:
    return run(ctx.params, ctx.contract, ctx.paths, args)


COMMANDS = [
    Command(
        "explain",
        "per-row contributions of a Parquet/CSV file of records",
        cmd_explain,
        add_arguments,
    ),
]
