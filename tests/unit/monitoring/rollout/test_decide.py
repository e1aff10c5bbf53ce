"""The rollout's statistics and decisions on synthetic labelled rows: metrics equal
scikit-learn's, the verdict finds a truly better and a truly worse challenger, and an identical
one is never promoted (20 seeds each); the monitor's decider promotes, ends or waits
accordingly, and ends a rollout whose challenger breaks the error or latency limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from support.paths import REPO

from plumbline.core.contract import load_contract
from plumbline.model.stats import BETTER, UNDECIDED, WORSE, compare, metric
from plumbline.monitoring.rollout.arms import collect, evaluate
from plumbline.monitoring.rollout.decide import Decider, decide, gate_refusal, limits_broken
from plumbline.monitoring.settings import Params, load_params
from plumbline.monitoring.store import MonitorStore

SEEDS = range(20)
GOOD_TAGS = {"metric.roc_auc": "0.79", "metric.pr_auc": "0.47", "metric.brier": "0.08"}


def _scores(rng: np.random.Generator, y: np.ndarray, quality: float) -> np.ndarray:
    """A model whose score separates the classes by ``quality`` standard deviations."""
    z = quality * y + rng.normal(size=len(y))
    return np.asarray(1.0 / (1.0 + np.exp(-(z - quality / 2))), dtype=np.float64)


def _arms(seed: int, n: int, challenger_quality: float | None) -> tuple[np.ndarray, ...]:
    """Outcomes, champion scores (quality 1.0) and challenger scores (None: the same model)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float64)
    p0 = _scores(rng, y, 1.0)
    p1 = p0.copy() if challenger_quality is None else _scores(rng, y, challenger_quality)
    return y, p0, p1


def test_metrics_equal_scikit_learns_with_ties() -> None:
    rng = np.random.default_rng(7)
    y = (rng.random(2000) < 0.2).astype(float)
    p = np.round(_scores(rng, y, 1.2), 2)  # many ties
    assert metric("roc_auc", y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert metric("pr_auc", y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert metric("log_loss", y, p) == pytest.approx(log_loss(y, p), abs=1e-12)
    assert metric("brier", y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


@pytest.mark.parametrize("paired", [True, False])
def test_verdicts_better_worse_identical_over_20_seeds(paired: bool) -> None:
    for seed in SEEDS:
        for quality, expected in ((1.7, BETTER), (0.4, WORSE)):
            y, p0, p1 = _arms(seed, 1000, quality)
            if paired:
                c = compare("roc_auc", (y, p0), (y, p1), paired=True, resamples=200, seed=seed)
            else:  # canary: the arms answered different rows
                c = compare(
                    "roc_auc", (y[:500], p0[:500]), (y[500:], p1[500:]), False, 0.0, 200, seed
                )
            assert c.verdict == expected, (seed, quality, c)
            assert c.low <= c.difference <= c.high
        y, p0, p1 = _arms(seed, 1000, None)
        for name in ("roc_auc", "pr_auc", "log_loss", "brier"):
            c = compare(name, (y, p0), (y, p1), paired=paired, resamples=100, seed=seed)
            if paired:  # the same scores on the same rows: exactly no difference
                assert (c.low, c.high, c.verdict) == (0.0, 0.0, UNDECIDED)
            else:  # resampled separately the interval has a width, but holds 0
                assert c.low < 0.0 < c.high and c.verdict == UNDECIDED, (seed, c)


def test_the_paired_interval_is_narrower_than_the_unpaired_one() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.3).astype(float)
    p0 = _scores(rng, y, 1.0)
    p1 = np.clip(p0 + rng.normal(scale=0.02, size=len(y)), 0, 1)  # a close relative
    paired = compare("roc_auc", (y, p0), (y, p1), paired=True, resamples=200)
    unpaired = compare("roc_auc", (y, p0), (y, p1), paired=False, resamples=200)
    assert paired.high - paired.low < (unpaired.high - unpaired.low) / 3


# --- the decider, on a real monitor store --------------------------------------------------


@pytest.fixture(scope="module")
def base_params() -> Params:
    return load_params(REPO / "params.yaml")


def _params(base: Params, auto: bool = True, **decide_cfg: Any) -> Params:
    rollout = base.serve.rollout
    decide_section = rollout.decide.model_copy(
        update={"auto": auto, "min_labelled_rows": 300, "bootstrap": 100, **decide_cfg}
    )
    serve = base.serve.model_copy(
        update={"rollout": rollout.model_copy(update={"decide": decide_section})}
    )
    return base.model_copy(update={"serve": serve})


def _store(tmp: Path) -> MonitorStore:
    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    return MonitorStore(tmp / "monitor.sqlite", contract, contract.feature_columns(["duration"]))


def _fill(store: MonitorStore, mode: str, y: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> None:
    """Logged rows of a rollout of version 2 against champion 1, all labelled."""
    _fill_more(store, mode, 0, y, p0, p1)


def _fill_more(
    store: MonitorStore, mode: str, first: int, y: np.ndarray, p0: np.ndarray, p1: np.ndarray
) -> None:
    """Rows ``first``, ``first + 1``, ... of such a rollout."""
    now = 1.7e9
    predictions = []
    for i, (a, b) in enumerate(zip(p0, p1, strict=True), start=first):
        if mode == "shadow":
            arm, version, prob, shadow_v, shadow_p = "champion", "1", a, "2", b
        else:  # every other row answered by the challenger
            arm, version, prob = ("challenger", "2", b) if i % 2 else ("champion", "1", a)
            shadow_v, shadow_p = None, None
        predictions.append(
            (
                f"r{i}",
                0,
                now + i * 1e-3,
                "m",
                version,
                float(prob),
                int(prob >= 0.5),
                arm,
                mode,
                shadow_v,
                None if shadow_p is None else float(shadow_p),
            )
        )
    with store.connect() as conn:
        conn.executemany(
            "INSERT INTO predictions (request_id, row, received_at, model_name, model_version, "
            "probability, label, arm, rollout, shadow_version, shadow_probability) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            predictions,
        )
        conn.executemany(
            "INSERT INTO feedback VALUES (?, 0, ?, ?)",
            [(f"r{i}", int(o), now) for i, o in enumerate(y, start=first)],
        )


class FakeServer:
    def __init__(self, mode: str, arms: dict[str, dict[str, float]] | None = None) -> None:
        self.mode = mode
        self.arms = arms or {}
        self.switched: list[str] = []

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "champion": {"model_version": "1"},
            "challenger": {"model_version": "2"},
            "arms": self.arms,
        }

    def set_mode(self, mode: str, fraction: float | None = None) -> dict[str, Any]:
        self.mode = mode
        self.switched.append(mode)
        return self.status()


class FakeRegistry:
    def __init__(self, tags: dict[str, str]) -> None:
        self.tags = tags
        self.history: list[tuple[str, str]] = []
        self.hold: str | None = None  # why promote does not move champion (approvals)

    def version_tags(self, version: str) -> dict[str, str]:
        return self.tags

    def promote(
        self, version: str, reason: str, evidence: dict[str, Any] | None = None
    ) -> str | None:
        self.history.append((version, reason))
        return self.hold


def _decider(
    tmp: Path, params: Params, mode: str, quality: float | None, seed: int, tags: dict[str, str]
) -> tuple[Decider, FakeServer, FakeRegistry]:
    store = _store(tmp)
    # Canary: each arm answers half the rows; 800 labelled rows per arm either way.
    y, p0, p1 = _arms(seed, 800 if mode == "shadow" else 1600, quality)
    _fill(store, mode, y, p0, p1)
    server, registry = FakeServer(mode), FakeRegistry(tags)
    return Decider(params, store, tmp, server, registry), server, registry


@pytest.mark.parametrize("mode", ["shadow", "canary"])
def test_auto_decisions_promote_better_end_worse_keep_identical(
    tmp_path: Path, base_params: Params, mode: str
) -> None:
    params = _params(base_params)
    seeds = SEEDS if mode == "shadow" else range(5)  # identical arms: the paired case
    for seed in seeds:
        cases = [(1.8, "promote"), (0.3, "end")] if seed < 5 else []
        cases += [(None, "none")] if mode == "shadow" else []
        for quality, action in cases:
            work = tmp_path / f"{mode}-{seed}-{quality}"
            decider, server, registry = _decider(work, params, mode, quality, seed, GOOD_TAGS)
            decision = decider.step()
            assert decision.action == action, (seed, quality, decision.reason)
            if action == "promote":
                assert registry.history and registry.history[0][0] == "2"
                reason = registry.history[0][1]
                assert "roc_auc" in reason and "% interval" in reason and "labelled rows" in reason
                assert server.switched == ["off"]  # the rollout ends with the promotion
            elif action == "end":
                assert registry.history == [] and server.switched == ["off"]
            else:
                assert registry.history == [] and server.switched == []
            assert (work / "rollout-decisions.jsonl").is_file() == (action != "none")


def test_with_approvals_required_a_better_verdict_waits_for_people(
    tmp_path: Path, base_params: Params
) -> None:
    decider, server, registry = _decider(
        tmp_path, _params(base_params), "shadow", 1.8, 0, GOOD_TAGS
    )
    registry.hold = "approvals required"
    first = decider.step()
    assert first.action == "promote" and not first.acted
    assert "not promoted: approvals required" in first.reason
    assert server.switched == []  # the rollout goes on while people decide
    decider.step()
    assert len(registry.history) == 1  # the verdict is handed over once, not at every step


def test_without_auto_nothing_is_done_and_a_failed_gate_blocks_promotion(
    tmp_path: Path, base_params: Params
) -> None:
    decider, server, registry = _decider(
        tmp_path / "a", _params(base_params, auto=False), "shadow", 1.8, 0, GOOD_TAGS
    )
    decision = decider.step()
    assert decision.action == "promote" and not decision.acted
    assert registry.history == [] and server.switched == []

    weak = {**GOOD_TAGS, "metric.roc_auc": "0.61"}
    decider, server, registry = _decider(
        tmp_path / "b", _params(base_params), "shadow", 1.8, 0, weak
    )
    decision = decider.step()
    assert registry.history == [] and server.switched == []
    assert "not promoted: gate: roc_auc 0.6100 < 0.7" in decision.reason
    assert gate_refusal({}, base_params.gate) == "the version is not in the registry"


def test_too_few_labelled_rows_is_no_difference_yet(tmp_path: Path, base_params: Params) -> None:
    decider, server, registry = _decider(
        tmp_path, _params(base_params, min_labelled_rows=5000), "shadow", 1.8, 0, GOOD_TAGS
    )
    decision = decider.step()
    assert decision.action == "none" and decision.reason.startswith("no difference yet")
    assert decider.report is not None and decider.report.verdict == UNDECIDED
    assert registry.history == [] and server.switched == []


def test_error_and_latency_limits_end_the_rollout(base_params: Params) -> None:
    params = _params(base_params)
    ok = {
        "requests": 1000,
        "errors": 0,
        "scoring_calls": 100,
        "scoring_rows": 1000,
        "scoring_seconds": 0.05,
    }
    erring = {**ok, "errors": 30}
    slow = {**ok, "scoring_seconds": 0.2}
    assert limits_broken({"arms": {"champion": ok, "challenger": ok}}, params) is None
    broken = limits_broken({"arms": {"champion": ok, "challenger": erring}}, params)
    assert broken is not None and "failed 2.9% of 1030 requests" in broken
    broken = limits_broken({"arms": {"champion": ok, "challenger": slow}}, params)
    assert broken is not None and "4.0x the champion's" in broken
    # Canary: the challenger's calls hold a tenth of the rows, so per call it looks faster
    # (0.2 ms against 0.5 ms) while each of its rows costs 3.6 times the champion's.
    champion = {**ok, "requests": 900, "scoring_rows": 900}
    share = {**ok, "requests": 200, "scoring_rows": 100, "scoring_seconds": 0.02}
    broken = limits_broken({"arms": {"champion": champion, "challenger": share}}, params)
    assert broken is not None and "per row, 3.6x the champion's" in broken
    status = FakeServer("canary", {"champion": ok, "challenger": erring}).status()
    assert decide(None, status, params).action == "end"
    assert decide(None, {**status, "mode": "off"}, params).action == "none"


def test_the_report_is_exported_and_printed(tmp_path: Path, base_params: Params) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    store = _store(tmp_path)
    y, p0, p1 = _arms(1, 800, 1.5)
    _fill(store, "shadow", y, p0, p1)
    report = evaluate(store, _params(base_params).serve.rollout.decide, 0.5)
    assert report is not None and report.mode == "shadow" and report.labelled["champion"] == 800
    assert report.divergence is not None
    assert report.divergence["mean_abs"] == pytest.approx(float(np.mean(np.abs(p0 - p1))))
    assert report.live["challenger"]["roc_auc"] == pytest.approx(roc_auc_score(y, p1))
    text = "\n".join(report.lines())
    assert "paired bootstrap" in text and "better *" in text

    class Wrapped:
        def collect(self) -> Any:
            return collect(report, {"promote": 1})

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Wrapped())  # type: ignore[arg-type]
    exported = generate_latest(registry).decode()
    assert 'plumbline_rollout_live_roc_auc{arm="challenger",model_version="2"}' in exported
    assert 'plumbline_rollout_verdict{metric="roc_auc"} 1.0' in exported
    assert "plumbline_rollout_shadow_divergence " in exported
    assert 'plumbline_rollout_decisions_total{action="promote"} 1.0' in exported


def test_the_monitor_service_exports_the_rollout_and_serves_its_verdict(
    tmp_path: Path, base_params: Params
) -> None:
    from plumbline.monitoring.service import build, create_app

    params = _params(base_params)
    params = params.model_copy(
        update={"monitor": params.monitor.model_copy(update={"state_dir": tmp_path / "state"})}
    )
    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    monitor, retrainer = build(params, contract, REPO)
    y, p0, p1 = _arms(2, 800, 1.8)
    _fill(monitor.store, "shadow", y, p0, p1)
    server, registry = FakeServer("shadow"), FakeRegistry(GOOD_TAGS)
    decider = Decider(params, monitor.store, monitor.state_dir, server, registry)
    app = create_app(monitor, retrainer, refresh_loop=False, decider=decider)
    # The routes' own functions (no HTTP client in the unit tier's environment).
    route = {getattr(r, "path", ""): getattr(r, "endpoint", None) for r in app.routes}
    decider.step()
    exported = route["/metrics"]().body.decode()
    verdict = json.loads(json.dumps(route["/rollout"](), default=str))
    assert 'plumbline_rollout_live_pr_auc{arm="champion",model_version="1"}' in exported
    assert "plumbline_drift_window_rows" in exported  # the monitor's own series too
    assert verdict["report"]["verdict"] == "better"
    assert verdict["report"]["comparisons"]["log_loss"]["paired"] is True
    assert verdict["decision"]["action"] == "promote" and verdict["decision"]["acted"]
    assert registry.history[0][0] == "2" and server.switched == ["off"]
    report = decider.report
    decider.step()  # no new row or outcome: the bootstrap is not run again
    assert decider.report is report


def _equal_models(seed: int, n: int) -> tuple[np.ndarray, ...]:
    """Outcomes and two different models of equal quality: the same true signal, each with its
    own noise of the same size."""
    rng = np.random.default_rng(1000 + seed)
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(2.0 * signal - 1.0)))).astype(np.float64)

    def model() -> np.ndarray:
        z = 2.0 * signal - 1.0 + rng.normal(scale=1.0, size=n)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    return y, model(), model()


@pytest.mark.parametrize("mode", ["shadow", "canary"])
def test_an_equal_but_different_challenger_is_never_promoted_over_a_live_rollout(
    tmp_path: Path, base_params: Params, mode: str
) -> None:
    """The decider as it runs live: a refresh after every 200 new labelled rows per arm, up to
    past the last planned look, 20 seeds; with the default margin and alpha spending."""
    # The window holds every arm's rows: in canary each arm gets half of it.
    window = 2000 if mode == "shadow" else 4000
    # 200 resamples: the 0.6 % tails of each look's interval need more than 100.
    params = _params(base_params, min_labelled_rows=200, window_rows=window, bootstrap=200)
    cfg = params.serve.rollout.decide
    assert cfg.margin > 0 and cfg.confidence == 1 - cfg.alpha / cfg.max_looks
    per_arm = cfg.look_rows()[-1] + 100
    total = per_arm if mode == "shadow" else 2 * per_arm  # canary: each arm answers half
    actions: list[str] = []
    for seed in SEEDS:
        y, p0, p1 = _equal_models(seed, total)
        assert abs(metric("roc_auc", y, p0) - metric("roc_auc", y, p1)) < 0.03
        work = tmp_path / f"{mode}-{seed}"
        store = _store(work)
        server, registry = FakeServer(mode), FakeRegistry(GOOD_TAGS)
        decider = Decider(params, store, work, server, registry)
        step = 200 if mode == "shadow" else 400
        judged = 0
        for start in range(0, total, step):
            _fill_more(
                store,
                mode,
                start,
                y[start : start + step],
                p0[start : start + step],
                p1[start : start + step],
            )
            decision = decider.step()
            actions.append(decision.action)
            judged += decision.evidence is not None and "comparisons" in decision.evidence
            assert decision.action != "promote", (seed, start, decision.reason)
        assert registry.history == []
        # Each planned look judged once, however many refreshes; unless a look ended the
        # rollout (a false "worse" only ends it: the champion stays).
        assert judged == cfg.max_looks or server.switched == ["off"], (seed, judged)
    assert actions.count("end") <= 2, actions
