"""Validate: run the contract's Great Expectations suite and quarantine the rows that fail.

Every row ends up in exactly one of two files: the valid rows, or the quarantine with the
list of failed checks per row. ``reports/validation.json`` counts rows per check and always
satisfies ``rows_in == rows_valid + rows_quarantined``.

:func:`validate` checks a frame in memory; :func:`run`, the stage, reads the ingested rows,
writes the two files, the report and the suite, builds GX Data Docs in ``reports/data_docs/``
and fails the stage when too many rows were quarantined.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from plumbline.core.artifacts import write_json, write_parquet
from plumbline.core.contract import REASONS, SOURCE_ROW, TYPE_ERRORS, Contract
from plumbline.core.errors import PlumblineError, need
from plumbline.core.paths import Layout
from plumbline.pipeline.settings import PipelineParams, ValidateConfig

log = logging.getLogger(__name__)


class ValidationFailed(PlumblineError):
    """Too many rows failed the contract."""


@dataclass
class ValidationReport:
    contract: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    quarantined_fraction: float
    max_bad_fraction: float
    passed: bool
    checks: dict[str, int] = field(default_factory=dict)
    gx_statistics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Validated:
    valid: pd.DataFrame
    quarantine: pd.DataFrame  # the failing rows, their failed checks in ``_quarantine_reasons``
    report: ValidationReport
    suite: dict[str, Any]  # the expectation suite as reports/expectation_suite.json holds it
    # The in-memory GX context that ran the suite: it holds the suite and the result, which is
    # what Data Docs are built from.
    gx_context: Any


def _gx_context() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    # Progress bars would interleave with DVC's output.
    context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    for site in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(site)
    return context


def run_suite(frame: pd.DataFrame, contract: Contract, check_duplicates: bool) -> tuple[Any, Any]:
    """Validate the frame with the contract's GX suite in an in-memory GX context; returns the
    context and the result, whose per-row failures are indices."""
    import great_expectations as gx

    context = _gx_context()
    asset = context.data_sources.add_pandas(contract.name).add_dataframe_asset("rows")
    batch_definition = asset.add_batch_definition_whole_dataframe("all_rows")
    suite = context.suites.add(contract.expectation_suite(check_duplicates))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{contract.name}_rows", data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{contract.name}_checkpoint",
            validation_definitions=[definition],
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    return context, next(iter(result.run_results.values()))


def suite_json(contract: Contract, check_duplicates: bool) -> dict[str, Any]:
    """The contract's expectation suite as JSON, without GX's IDs: they are random per run, and
    the readable suite should not churn."""
    suite: dict[str, Any] = dict(contract.expectation_suite(check_duplicates).to_json_dict())
    suite.pop("id", None)
    expectation: dict[str, Any]
    for expectation in suite.get("expectations", []):
        expectation.pop("id", None)
    return suite


def quarantine_reasons(
    frame: pd.DataFrame, suite_result: Any, check_duplicates: bool
) -> tuple[dict[int, list[str]], dict[str, int]]:
    """Per failing row (by position), the checks it failed; per check, how many rows failed it.

    Only failing rows get an entry: a list per row of a large, mostly valid file would cost
    more than the checks that fill it.
    """
    reasons: defaultdict[int, list[str]] = defaultdict(list)

    # Type errors first: the failed cell is null now, and its null check is not the reason.
    type_failed: dict[int, set[str]] = {}
    for i in np.flatnonzero(frame[TYPE_ERRORS].notna().to_numpy()).tolist():
        cols = json.loads(frame[TYPE_ERRORS].iat[i])
        type_failed[i] = set(cols)
        reasons[i].extend(f"type:{c}" for c in sorted(cols))

    for result in suite_result.results:
        check = (result.expectation_config.meta or {}).get("check", "")
        if result.success or check in ("type", "duplicate"):
            continue
        if check.startswith("exists:"):
            raise ValidationFailed(f"column {check.split(':', 1)[1]!r} is missing from the data")
        if result.exception_info and result.exception_info.get("raised_exception"):
            raise ValidationFailed(
                f"check {check} could not run: {result.exception_info.get('exception_message')}"
            )
        column = check.split(":", 1)[1] if ":" in check else ""
        for i in result.result.get("unexpected_index_list") or []:
            if check.startswith("not_null:") and column in type_failed.get(int(i), ()):
                continue
            reasons[int(i)].append(check)

    if check_duplicates:
        # Keep the first copy of each duplicated row; later copies are quarantined. The original
        # text of cells that failed coercion counts: "abc" and "xyz" are both null now.
        duplicated = frame.drop(columns=[SOURCE_ROW]).duplicated(keep="first")
        for i in np.flatnonzero(duplicated.to_numpy()).tolist():
            reasons[i].append("duplicate")

    counts: dict[str, int] = {}
    for row in reasons.values():
        for check in row:
            counts[check] = counts.get(check, 0) + 1
    return {i: row for i, row in reasons.items() if row}, dict(sorted(counts.items()))


def validate(frame: pd.DataFrame, contract: Contract, cfg: ValidateConfig) -> Validated:
    """Every row of ``frame`` either valid or quarantined with its failed checks, and the
    report; ``report.passed`` says whether few enough rows failed."""
    frame = frame.reset_index(drop=True)
    context, suite_result = run_suite(frame, contract, cfg.check_duplicates)
    reasons, counts = quarantine_reasons(frame, suite_result, cfg.check_duplicates)
    failing = sorted(reasons)
    bad = np.zeros(len(frame), dtype=bool)
    bad[failing] = True
    valid = frame.loc[~bad].reset_index(drop=True)
    quarantine = frame.loc[bad].reset_index(drop=True)
    quarantine[REASONS] = pd.Series(
        [reasons[i] for i in failing], index=quarantine.index, dtype=object
    )
    rows_in = len(frame)
    fraction = float(bad.sum()) / rows_in if rows_in else 0.0
    stats = dict(suite_result.statistics)
    report = ValidationReport(
        contract=contract.name,
        rows_in=rows_in,
        rows_valid=len(valid),
        rows_quarantined=len(quarantine),
        quarantined_fraction=round(fraction, 6),
        max_bad_fraction=cfg.max_bad_fraction,
        passed=fraction <= cfg.max_bad_fraction and len(valid) > 0,
        checks=counts,
        gx_statistics={k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()},
    )
    assert report.rows_in == report.rows_valid + report.rows_quarantined
    return Validated(
        valid=valid,
        quarantine=quarantine,
        report=report,
        suite=suite_json(contract, cfg.check_duplicates),
        gx_context=context,
    )


def quarantine_schema(contract: Contract) -> pa.Schema:
    return contract.arrow_schema().append(pa.field(REASONS, pa.list_(pa.string())))


def write_data_docs(context: Any, out: Path) -> None:
    """GX Data Docs (the suite and the run's result, as HTML) in ``out``."""
    context.add_data_docs_site(
        site_name="reports",
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(out.resolve()),  # GX wants it absolute
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    context.build_data_docs(site_names=["reports"])


def run(params: PipelineParams, contract: Contract, paths: Layout) -> Validated:
    """The stage: validate the ingested rows and write both parts, the report, the suite and
    the Data Docs; then fail if too many rows were quarantined (the evidence is written)."""
    need(paths.ingested, hint="run `plumbline ingest` (or `dvc repro`) first")
    if paths.data_docs.exists():  # a failed run must not leave the previous run's docs
        shutil.rmtree(paths.data_docs)
    cfg = params.validate_
    out = validate(pd.read_parquet(paths.ingested), contract, cfg)
    write_parquet(out.valid, paths.valid, contract.arrow_schema())
    write_parquet(out.quarantine, paths.quarantine, quarantine_schema(contract))
    write_json(asdict(out.report), paths.validation_report)
    write_json(out.suite, paths.expectation_suite)
    write_data_docs(out.gx_context, paths.data_docs)
    report = out.report
    if not report.passed:
        top = sorted(report.checks.items(), key=lambda kv: -kv[1])[:5]
        raise ValidationFailed(
            f"{report.rows_quarantined} of {report.rows_in} rows "
            f"({report.quarantined_fraction:.2%}) failed the contract, above "
            f"validate.max_bad_fraction={report.max_bad_fraction:.2%}; most failed checks: "
            + ", ".join(f"{k} ({v})" for k, v in top)
            + f". The rows and their reasons are in {paths.quarantine}."
        )
    return out
