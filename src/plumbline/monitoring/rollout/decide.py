"""Ending a rollout: promote a challenger that is better with confidence, stop one that is not.

After each refresh the monitor (:class:`Decider`) reads the server's rollout
(``GET /admin/rollout``: mode, versions, per-arm requests, errors, scoring time) and the
verdict on the labelled rows (:func:`plumbline.monitoring.rollout.arms.evaluate`), and decides:

* **end** the rollout (mode back to ``off``) when the challenger fails more than
  ``decide.max_error_rate`` of its requests (requests met while it was still loading are
  not failures), or its scoring time per row is more than ``decide.max_latency_ratio``
  times the champion's (both once each arm has ``decide.min_requests``), or the verdict on
  ``decide.metric`` is ``worse``;
* **promote** when the verdict is ``better``: the challenger version must pass the gate's
  absolute thresholds (``gate.min_roc_auc``, ``min_pr_auc``, ``max_brier``) on the test
  metrics ``plumbline promote`` recorded on it (the live verdict takes the place of the
  gate's comparison with the champion), then ``champion`` moves to it with the verdict as the
  reason in the champion history, and the rollout ends (the server reloads the new champion);
* nothing otherwise: ``no difference yet`` never promotes.

The verdict is acted on only at planned looks: the first refresh at which the labelled rows
per arm reach ``min_labelled_rows``, then twice that, four times, ... (``max_looks`` looks in
all); each look's interval has confidence ``1 - alpha / max_looks`` (Bonferroni), so over
the whole rollout an equal challenger is called better or worse with probability at most
``alpha``, however often the monitor refreshes. The looks taken are kept per rollout
(``<state_dir>/rollout-looks.json``) across monitor restarts.

Only with ``decide.auto: true`` does it act; either way the decision is kept
(``<state_dir>/rollout-decisions.jsonl``) and shown by ``plumbline rollout status``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from plumbline.model.stats import BETTER, WORSE
from plumbline.monitoring.rollout.arms import ArmsReport, evaluate, rollout_key
from plumbline.monitoring.settings import Params
from plumbline.monitoring.store import MonitorStore
from plumbline.promotion.settings import GateConfig

log = logging.getLogger("plumbline.monitor")

DECISIONS_FILE = "rollout-decisions.jsonl"
LOOKS_FILE = "rollout-looks.json"


class Control(Protocol):
    def status(self) -> dict[str, Any]: ...

    def set_mode(self, mode: str, fraction: float | None = None) -> dict[str, Any]: ...


class ChampionMover(Protocol):
    def version_tags(self, version: str) -> dict[str, str]: ...

    def promote(
        self, version: str, reason: str, evidence: dict[str, Any] | None = None
    ) -> str | None:
        """Move ``champion`` to ``version``; or say why it did not move."""
        ...


class ServerControl:
    """The server's ``/admin/rollout`` over HTTP, with the admin bearer token."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 90.0) -> None:
        self.url = url.rstrip("/") + "/admin/rollout"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s

    def _answer(self, response: Any) -> dict[str, Any]:
        if response.status_code != 200:
            raise RuntimeError(f"{self.url}: {response.status_code} {response.text[:300]}")
        result: dict[str, Any] = response.json()
        return result

    def status(self) -> dict[str, Any]:
        import requests

        timeout = min(10.0, self.timeout_s)
        return self._answer(requests.get(self.url, headers=self.headers, timeout=timeout))

    def set_mode(self, mode: str, fraction: float | None = None) -> dict[str, Any]:
        import requests

        body: dict[str, Any] = {"mode": mode}
        if fraction is not None:
            body["canary_fraction"] = fraction
        return self._answer(
            requests.post(self.url, json=body, headers=self.headers, timeout=self.timeout_s)
        )


class RegistryMover:
    """Moves ``champion`` in the MLflow registry (recorded in its history)."""

    def __init__(self, params: Params, root: Path) -> None:
        self.params = params
        self.root = root

    def _registry(self) -> Any:
        from plumbline.promotion.registry import (
            Registry,  # MLflow: imported only when a decision needs it
        )

        return Registry.from_params(self.params, self.root)

    def version_tags(self, version: str) -> dict[str, str]:
        for row in self._registry().versions():
            if row.version == version:
                return dict(row.tags)
        return {}

    def promote(
        self, version: str, reason: str, evidence: dict[str, Any] | None = None
    ) -> str | None:
        """The verdict goes to the audit trail; ``champion`` moves only when no approval is
        required (with approvals, people decide: the verdict is their evidence)."""
        from plumbline.promotion.approvals import MONITOR

        registry = self._registry()
        required = self.params.promotion.approvals.required
        registry.record(
            "rollout_verdict", MONITOR, {"version": version, "verdict": "better"}, evidence, reason
        )
        if required > 0:
            return (
                f"promotion.approvals.required is {required}: the verdict is in the audit "
                "trail; gate and promote the challenger to request approval"
            )
        registry.set_champion(version, "promote", reason, actor=MONITOR, evidence=evidence)
        return None


@dataclass
class Decision:
    action: str  # promote | end | none
    reason: str
    acted: bool = False
    at: float = 0.0
    mode: str = "off"
    champion_version: str | None = None
    challenger_version: str | None = None
    evidence: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def limits_broken(status: dict[str, Any], params: Params) -> str | None:
    """Why the challenger breaks the error or latency limit, or None."""
    cfg = params.serve.rollout.decide
    arms = status.get("arms") or {}
    champion, challenger = arms.get("champion") or {}, arms.get("challenger") or {}
    tried = float(challenger.get("requests", 0)) + float(challenger.get("errors", 0))
    if tried >= cfg.min_requests:
        rate = float(challenger.get("errors", 0)) / tried
        if rate > cfg.max_error_rate:
            return (
                f"challenger failed {rate:.1%} of {int(tried)} requests "
                f"(limit {cfg.max_error_rate:.1%})"
            )
    # Per row, not per call: in canary mode the challenger's calls hold only its share of a
    # batch's rows, so its calls are shorter even when each row costs more.
    rows = [float(a.get("scoring_rows", 0)) for a in (champion, challenger)]
    if min(float(champion.get("requests", 0)), float(challenger.get("requests", 0))) >= (
        cfg.min_requests
    ) and min(rows):
        mine = float(challenger["scoring_seconds"]) / rows[1]
        theirs = float(champion["scoring_seconds"]) / rows[0]
        if theirs > 0 and mine / theirs > cfg.max_latency_ratio:
            return (
                f"challenger scoring takes {mine * 1e6:.1f} µs per row, "
                f"{mine / theirs:.1f}x the champion's (limit {cfg.max_latency_ratio:g}x)"
            )
    return None


def gate_refusal(tags: dict[str, str], gate: GateConfig) -> str | None:
    """Why the version fails the gate's absolute thresholds on its recorded test metrics."""
    if not tags:
        return "the version is not in the registry"
    checks = (
        ("roc_auc", gate.min_roc_auc, True),
        ("pr_auc", gate.min_pr_auc, True),
        ("brier", gate.max_brier, False),
    )
    problems = []
    for name, threshold, at_least in checks:
        raw = tags.get(f"metric.{name}")
        if raw is None:
            problems.append(f"no recorded {name} (register it with `plumbline promote`)")
            continue
        value = float(raw)
        if (value < threshold) if at_least else (value > threshold):
            problems.append(f"{name} {value:.4f} {'<' if at_least else '>'} {threshold}")
    return "; ".join(problems) or None


def decide(
    report: ArmsReport | None,
    status: dict[str, Any],
    params: Params,
    looked: int | None = None,
) -> Decision:
    """``looked``: the last planned look already judged in this rollout (None: none); a verdict
    counts only at a look beyond it."""
    mode = str(status.get("mode", "off"))
    champion = (status.get("champion") or {}).get("model_version")
    challenger = (status.get("challenger") or {}).get("model_version")

    def made(action: str, reason: str, evidence: dict[str, Any] | None = None) -> Decision:
        return Decision(
            action,
            reason,
            mode=mode,
            champion_version=champion,
            challenger_version=challenger,
            evidence=evidence,
        )

    if mode == "off":
        return made("none", "no rollout is running")
    broken = limits_broken(status, params)
    if broken:
        return made("end", broken, {"arms": status.get("arms")})
    if report is None or report.mode != mode or report.challenger_version != challenger:
        return made("none", "no labelled rows of this rollout yet")
    evidence = report.to_dict()
    chosen = report.comparisons.get(report.metric)
    if chosen is None:
        return made("none", "too few labelled rows with both outcomes")
    looks = len(report.look_rows)
    if report.look is None:
        return made("none", f"no difference yet: fewer than {report.look_rows[0]} labelled rows")
    if looked is not None and report.look <= looked:
        if looked + 1 >= looks:
            return made("none", f"all {looks} planned looks judged; no more verdicts")
        return made(
            "none",
            f"look {looked + 1} of {looks} judged; next look at "
            f"{report.look_rows[looked + 1]} labelled rows per arm",
        )
    what = (
        f"look {report.look + 1} of {looks}: {report.metric} {chosen.challenger:.4f} vs "
        f"{chosen.champion:.4f}, difference {chosen.difference:+.4f} "
        f"({report.confidence * 100:.4g} % interval [{chosen.low:+.4f}, {chosen.high:+.4f}], "
        f"{'paired' if chosen.paired else 'unpaired'} bootstrap, "
        f"{chosen.champion_rows}{'' if chosen.paired else '+' + str(chosen.challenger_rows)} "
        f"labelled rows, {mode})"
    )
    if chosen.verdict == BETTER:
        return made("promote", f"challenger better: {what}", evidence)
    if chosen.verdict == WORSE:
        return made("end", f"challenger worse: {what}", evidence)
    return made("none", f"no difference yet: {what}", evidence)


class Decider:
    def __init__(
        self,
        params: Params,
        store: MonitorStore,
        state_dir: Path,
        control: Control,
        mover: ChampionMover | None,
    ) -> None:
        self.params = params
        self.store = store
        self.path = state_dir / DECISIONS_FILE
        self.control = control
        self.mover = mover
        self.report: ArmsReport | None = None
        self.last: Decision | None = None
        self.taken: Counter[str] = Counter()
        # Challengers the verdict found better whose promotion waits for approvals: why.
        self.held: dict[str, str] = {}
        self._key: tuple[Any, ...] | None = None
        self.looks_path = state_dir / LOOKS_FILE
        self.looked: dict[str, int] = self._load_looks()

    def _load_looks(self) -> dict[str, int]:
        try:
            raw = json.loads(self.looks_path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def _save_looks(self) -> None:
        self.looks_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.looks_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.looked))
        os.replace(tmp, self.looks_path)

    @staticmethod
    def _rollout_id(report: ArmsReport) -> str:
        return f"{report.mode}:{report.champion_version}:{report.challenger_version}"

    def step(self) -> Decision:
        cfg = self.params.serve.rollout
        key = rollout_key(self.store)
        if key != self._key:  # the bootstrap only when rows or outcomes arrived
            self.report = evaluate(self.store, cfg.decide, self.params.serve.threshold)
            self._key = key
        try:
            status = self.control.status()
        except Exception as err:
            decision = Decision("none", f"server unreachable: {err}")
        else:
            report = self.report
            rid = self._rollout_id(report) if report is not None else None
            looked = self.looked.get(rid) if rid is not None else None
            decision = decide(report, status, self.params, looked)
            judged = "comparisons" in (decision.evidence or {})  # a verdict read at a look
            if judged and report is not None and rid is not None and report.look is not None:
                self.looked[rid] = report.look  # this look is spent, whatever its verdict
                self._save_looks()
        decision.at = time.time()
        if decision.action != "none" and cfg.decide.auto:
            self._act(decision)
        previous = self.last
        if decision.action != "none" and (
            decision.acted
            or previous is None
            or (previous.action, previous.challenger_version)
            != (decision.action, decision.challenger_version)
        ):
            self._record(decision)  # each new call once, and every action taken
        self.last = decision
        return decision

    def _act(self, decision: Decision) -> None:
        if decision.action == "promote":
            if self.mover is None or decision.challenger_version is None:
                decision.reason += "; not promoted: no registry"
                return
            refused = gate_refusal(
                self.mover.version_tags(decision.challenger_version), self.params.gate
            )
            if refused:
                decision.reason += f"; not promoted: gate: {refused}"
                return
            if decision.challenger_version in self.held:
                decision.reason += f"; not promoted: {self.held[decision.challenger_version]}"
                return
            held = self.mover.promote(
                decision.challenger_version, f"rollout: {decision.reason}", decision.evidence
            )
            if held:
                # Recorded once: the rollout goes on while people decide.
                self.held[decision.challenger_version] = held
                decision.reason += f"; not promoted: {held}"
                return
            log.info("rollout: promoted %s (%s)", decision.challenger_version, decision.reason)
        else:
            log.warning("rollout: ending (%s)", decision.reason)
        self.control.set_mode("off")
        decision.acted = True
        self.taken[decision.action] += 1

    def collect(self) -> Any:
        from plumbline.monitoring.rollout.arms import collect

        return collect(self.report, dict(self.taken))

    def _record(self, decision: Decision) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(decision.to_dict(), default=str) + "\n")


SERVER_URL_ENV = "PLUMBLINE_SERVER_URL"


def server_url(params: Params) -> str:
    """``PLUMBLINE_SERVER_URL`` if set (the compose stack: http://api:8000), else
    ``serve.rollout.server_url``."""
    return os.environ.get(SERVER_URL_ENV) or params.serve.rollout.server_url


def build(params: Params, store: MonitorStore, state_dir: Path, root: Path) -> Decider:
    """The monitor's decider: the server at :func:`server_url`, the registry."""
    token = os.environ.get(params.serve.admin_token_env) or None
    control = ServerControl(server_url(params), token)
    return Decider(params, store, state_dir, control, RegistryMover(params, root))
