"""The lineage chain's bookkeeping and the list of paths DVC writes (pure logic)."""

from __future__ import annotations

from pathlib import Path

from support.paths import REPO

from plumbline.core.tracking import dvc_outputs
from plumbline.promotion.lineage import Chain, Link


def test_a_chain_is_complete_only_when_every_link_is_followed() -> None:
    chain = Chain([Link("version", {"version": "3"}), Link("git commit", {"sha": "abc"})])
    assert chain.complete and chain.to_json()["complete"] is True
    chain.links.append(Link("raw data", missing="no raw data content hash or source"))
    assert not chain.complete
    assert [link.name for link in chain.missing] == ["raw data"]
    text = chain.text()
    assert "version      version=3" in text
    assert "raw data     MISSING: no raw data content hash or source" in text
    assert chain.to_json()["links"][2] == {
        "name": "raw data",
        "value": None,
        "missing": "no raw data content hash or source",
    }


def test_dvc_outputs_lists_outs_metrics_and_plots_of_the_project() -> None:
    outputs = dvc_outputs(REPO)
    for path in (
        "models/model.skops",
        "models/model.json",
        "reports/metrics.json",  # a metric, cache: false (tracked by git)
        "reports/plots/roc.csv",  # a plot
        "reports/validation.json",
        "data/interim/valid.parquet",
    ):
        assert path in outputs, path
    assert "reports/data_docs" not in outputs  # written, but no output: GX stamps the time
    assert "data/raw" not in outputs  # a dependency


def test_dvc_outputs_of_a_folder_without_dvc_yaml_is_empty(tmp_path: Path) -> None:
    assert dvc_outputs(tmp_path) == []
