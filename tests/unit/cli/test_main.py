"""The entry points that are ``plumbline`` subcommands: serve, demo and bootstrap parse the
options of the programs they replace, and demo and bootstrap report as the CLI does."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from plumbline.cli import serving
from plumbline.cli.main import COMMANDS, build_parser, main
from plumbline.monitoring import demo
from plumbline.promotion import first_champion


def _subparser(name: str) -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            parser: argparse.ArgumentParser = action.choices[name]
            return parser
    raise AssertionError("plumbline has no subcommands")


def _options(name: str) -> set[str]:
    return {s for a in _subparser(name)._actions for s in a.option_strings} - {"-h", "--help"}


def test_every_entry_point_is_a_subcommand() -> None:
    assert {"serve", "demo", "bootstrap"} <= set(COMMANDS)
    assert _options("serve") == {"--params", "--host", "--port", "--log-level"}
    assert _options("demo") == {"--out", "--set", "--keep", "--render"}
    assert _options("bootstrap") == {
        "--source",
        "--webhook-token-file",
        "--outputs-only",
        "--wait-tracking-s",
        "--wait-audit-s",
    }


def test_serve_has_serve_app_s_defaults_and_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORT", raising=False)
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.log_level, args.params) == ("0.0.0.0", 8000, "warning", None)
    monkeypatch.setenv("PORT", "9123")
    assert build_parser().parse_args(["serve"]).port == 9123
    assert build_parser().parse_args(["serve", "--port", "8001"]).port == 8001
    for bad in (["--host", "localhost"], ["--log-level", "trace"], ["--port", "http"]):
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args(["serve", *bad])
        assert stop.value.code == 2


def test_a_bad_port_variable_is_serve_s_usage_error_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "eighty")
    assert build_parser().parse_args(["models"]).command == "models"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve"])
    assert "argument --port: invalid int value: 'eighty'" in capsys.readouterr().err


def test_serve_takes_params_before_or_after_the_subcommand() -> None:
    """serve/app.py passes its arguments after `serve`; the global --params stays valid."""
    parse = build_parser().parse_args
    assert parse(["--params", "a.yaml", "serve"]).params == Path("a.yaml")
    assert parse(["serve", "--params", "b.yaml"]).params == Path("b.yaml")
    assert parse(["--params", "a.yaml", "serve", "--params", "b.yaml"]).params == Path("b.yaml")
    assert parse(["--params", "a.yaml", "gate"]).params == Path("a.yaml")


def test_demo_takes_the_demo_s_options() -> None:
    args = build_parser().parse_args(
        ["demo", "--out", "o", "--set", "replay.rate=40", "--set", "monitor.interval_s=3", "--keep"]
    )
    assert (args.out, args.set, args.keep) == (
        Path("o"),
        ["replay.rate=40", "monitor.interval_s=3"],
        True,
    )
    args = build_parser().parse_args(["demo"])
    assert (args.out, args.set, args.keep) == (None, [], False)


def test_bootstrap_s_source_defaults_to_the_image_s_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PLUMBLINE_PROJECT_SOURCE", raising=False)
    assert build_parser().parse_args(["bootstrap"]).source is None
    monkeypatch.setenv("PLUMBLINE_PROJECT_SOURCE", "/opt/plumbline")
    assert build_parser().parse_args(["bootstrap"]).source == Path("/opt/plumbline")
    assert build_parser().parse_args(["bootstrap", "--source", "s"]).source == Path("s")


def test_demo_runs_in_the_project_and_refuses_a_decision_threshold(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(out: Path, settings: dict[str, Any], keep: bool = False) -> dict[str, Any]:
        seen.update(out=out, settings=settings, keep=keep)
        return {
            "replay": {"ok_rows": 120},
            "retrains": [{"status": "promoted"}, {"status": "rejected"}],
        }

    monkeypatch.setattr(demo, "run", fake_run)
    monkeypatch.setenv("PLUMBLINE_ROOT", str(tmp_path))
    assert main(["demo", "--set", "replay.rate=40"]) == 0
    assert seen["out"] == tmp_path / "reports/loop"
    assert seen["settings"]["replay.rate"] == 40 and seen["keep"] is False
    assert (
        "plumbline demo: 120 rows answered, 2 retrains (1 promoted); report in "
        f"{tmp_path / 'reports/loop'}"
    ) in capsys.readouterr().out

    assert main(["demo", "--set", "gate.min_roc_auc=0.1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("plumbline demo: error: gate.min_roc_auc: the demo may not override")


def test_bootstrap_reports_the_champion_or_why_there_is_none(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    calls: list[tuple[Path, Path | None]] = []

    def fake_bootstrap(
        root: Path,
        source: Path | None,
        token_file: Path | None,
        outputs_only: bool,
        wait_tracking_s: float,
        wait_audit_s: float,
    ) -> str:
        calls.append((root, source))
        if source is None:
            raise first_champion.BootstrapError("no champion")
        return "3"

    monkeypatch.setattr(first_champion, "bootstrap", fake_bootstrap)
    monkeypatch.setenv("PLUMBLINE_ROOT", str(tmp_path))
    monkeypatch.delenv("PLUMBLINE_PROJECT_SOURCE", raising=False)
    assert main(["bootstrap", "--source", "src"]) == 0
    assert "plumbline bootstrap: champion is version 3; the API can serve it" in (
        capsys.readouterr().out
    )
    assert main(["bootstrap"]) == 1
    assert capsys.readouterr().err == "plumbline bootstrap: error: no champion\n"
    assert calls == [(tmp_path, Path("src")), (tmp_path, None)]


# --- serve's thread limit ---------------------------------------------------------------------


def test_the_thread_variables_are_set_where_unset_and_a_loaded_blas_is_limited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threadpoolctl

    limits: list[int] = []
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", limits.append)
    environ: dict[str, str] = {}
    # numpy is loaded in this process, as in `plumbline serve` (other commands import it).
    assert serving.one_thread_per_process(environ) is True
    assert environ == dict.fromkeys(serving.THREAD_VARIABLES, "1")
    assert limits == [1]


def test_the_user_s_thread_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    import threadpoolctl

    limits: list[int] = []
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", limits.append)
    environ = {"OMP_NUM_THREADS": "4"}
    assert serving.one_thread_per_process(environ) is False
    assert environ == {"OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert limits == []
