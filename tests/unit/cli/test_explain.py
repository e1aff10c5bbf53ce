"""`plumbline explain`'s file handling: CSV typed by the contract, clear errors, and the
same numbers as the explainer on the Parquet rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.serve import artifacts

from plumbline.cli.explain import ExplainInputError, read_records
from plumbline.core.contract import Contract
from plumbline.core.errors import MissingInput
from plumbline.model.artifact import load_model
from plumbline.model.explain import Explainer, explanation_table


def test_csv_and_parquet_give_the_same_explanations(contract: Contract, tmp_path: Path) -> None:
    a = artifacts()
    test = a.test_frame().head(30)
    test.to_csv(tmp_path / "rows.csv", sep=";", index=False)
    test.to_parquet(tmp_path / "rows.parquet")
    model = load_model(a.model)
    from_csv = read_records(tmp_path / "rows.csv", contract, a.features, ";")
    from_parquet = read_records(tmp_path / "rows.parquet", contract, a.features, ",")
    out_csv = explanation_table(model, from_csv, a.features, 3)
    out_parquet = explanation_table(model, from_parquet, a.features, 3)
    pd.testing.assert_frame_equal(out_csv, out_parquet)
    reference = Explainer(model, a.features).explain_frame(test)
    np.testing.assert_allclose(out_csv["log_odds"], reference.log_odds, atol=1e-12)
    contributions = out_csv[[f"contribution.{f}" for f in a.features]].to_numpy()
    np.testing.assert_allclose(contributions, reference.contributions, atol=1e-12)


def test_bad_files_are_named(contract: Contract, tmp_path: Path) -> None:
    a = artifacts()
    with pytest.raises(MissingInput):
        read_records(tmp_path / "nope.csv", contract, a.features, ",")
    test = a.test_frame().head(3)
    test.drop(columns=["age"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ExplainInputError, match="age"):
        read_records(tmp_path / "short.csv", contract, a.features, ",")
    bad = test.astype(object)
    bad.loc[bad.index[1], "campaign"] = "many"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ExplainInputError, match="'campaign' row 1: 'many'"):
        read_records(tmp_path / "bad.csv", contract, a.features, ",")
