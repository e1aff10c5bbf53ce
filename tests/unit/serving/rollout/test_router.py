"""Shadow and canary scoring in a worker, in process, with the real models and scorers: shadow
answers are the rollout-off answers byte for byte, canary shares and sticky keys hold, and a
challenger that fails never changes a champion answer."""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import orjson
import pytest
from support.paths import REPO
from support.serve import artifacts

from plumbline.core.contract import Contract, load_contract
from plumbline.model.artifact import load_model
from plumbline.serving.api import PredictAPI
from plumbline.serving.metrics import ArmMetrics, ServeMetrics
from plumbline.serving.predlog_writer import Batch
from plumbline.serving.rollout.router import ArmChooser, Rollout, RolloutState, sticky_share
from plumbline.serving.scorer import compile_scorer
from plumbline.serving.settings import RolloutConfig
from plumbline.serving.source import ServedModel

THRESHOLD = 0.5


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(REPO / "contracts/bank_marketing.yaml")


def _served(path: Any, version: str, contract: Contract, features: list[str]) -> ServedModel:
    scorer = compile_scorer(load_model(path), contract, features)
    return ServedModel("plumbline-classifier", version, "registry", scorer, time.time())


@pytest.fixture(scope="module")
def models(contract: Contract) -> tuple[ServedModel, ServedModel]:
    bank = artifacts()
    return (
        _served(bank.model, "1", contract, bank.features),
        _served(bank.other_model, "2", contract, bank.features),
    )


@pytest.fixture(scope="module")
def rows() -> list[tuple[Any, ...]]:
    bank = artifacts()
    frame = bank.test_frame()[bank.features].astype(object)
    return [
        tuple(v.item() if hasattr(v, "item") else v for v in row)
        for row in frame.itertuples(index=False, name=None)
    ]


class _Log:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def append(self, batch: Batch) -> None:
        self.batches.append(batch)


class _Manager:
    def __init__(self, model: ServedModel | None) -> None:
        self.active = model
        self.last_error: str | None = None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _Raising:
    kind = "broken"

    def proba(self, rows: Any) -> np.ndarray:
        raise RuntimeError("the challenger cannot score")


def _rollout(
    mode: str,
    challenger: ServedModel | None,
    fraction: float = 0.2,
    sticky: str | None = None,
    seed: int = 0,
    **settings: Any,
) -> tuple[Rollout, _Log, ArmMetrics]:
    bank = artifacts()
    log = _Log()
    metrics = ArmMetrics(False)
    cfg = RolloutConfig(mode=mode, canary_fraction=fraction, sticky_key=sticky, **settings)  # type: ignore[arg-type]
    manager: Any = _Manager(challenger)
    rollout = Rollout(
        cfg,
        bank.features,
        THRESHOLD,
        metrics,
        log,  # type: ignore[arg-type]
        lambda *a: None,
        lambda: manager,
        rng=random.Random(seed),
    )
    rollout._apply(RolloutState.from_config(cfg))
    return rollout, log, metrics


def _requests(rows: list[tuple[Any, ...]], n: int, prefix: str = "r") -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for i in range(n):
        if i % 7 == 3:  # some multi-record requests too
            out.append(
                (f"{prefix}{i}", 1.0, [rows[i % len(rows)], rows[(i + 1) % len(rows)]], False, 0)
            )
        else:
            out.append((f"{prefix}{i}", 1.0, [rows[i % len(rows)]], True, 0))
    return out


def _off_answers(
    champion: ServedModel, requests: list[tuple[Any, ...]], batch: int | None = None
) -> list[Any]:
    """What the worker answers with the rollout off (PredictAPI.predict itself), batch by
    batch: the same batches, because BLAS may round a row's last bit differently in another
    batch size (with the rollout off too)."""
    api: Any = PredictAPI.__new__(PredictAPI)
    api.models = _Manager(champion)
    api.threshold = THRESHOLD
    api.metrics = ServeMetrics(False, role="worker")
    api.predlog = None
    api.rollout = type("Off", (), {"active": False})()
    step = batch or len(requests)
    out: list[Any] = []
    for start in range(0, len(requests), step):
        out += PredictAPI.predict(api, requests[start : start + step])
    return out


def test_shadow_answers_are_the_rollout_off_answers_and_the_log_has_both_scores(
    models: tuple[ServedModel, ServedModel], rows: list[tuple[Any, ...]]
) -> None:
    champion, challenger = models
    requests = _requests(rows, 300)
    rollout, log, metrics = _rollout("shadow", challenger)
    got: list[Any] = []
    for start in range(0, len(requests), 64):  # batches as the loop forms them
        got += rollout.predict(requests[start : start + 64], champion)
        rollout.drain()  # the shadow thread logs each batch once the challenger scored it
    assert got == _off_answers(champion, requests, 64)  # the same bytes
    logged = sum(len(b.rows) for b in log.batches)
    assert logged == sum(len(r[2]) for r in requests)
    for batch in log.batches:
        assert batch.arm == "champion" and batch.rollout == "shadow"
        assert batch.shadow_version == "2" and batch.shadow_probabilities is not None
        expected = challenger.scorer.proba(batch.rows)
        assert np.array_equal(batch.shadow_probabilities, expected)
        assert not np.array_equal(batch.shadow_probabilities, batch.probabilities)
    assert metrics.totals["challenger"]["requests"] == len(requests)
    assert metrics.totals["challenger"]["errors"] == 0


def test_canary_share_is_the_fraction_within_two_and_a_half_points(
    models: tuple[ServedModel, ServedModel], rows: list[tuple[Any, ...]]
) -> None:
    champion, challenger = models
    for seed in (1, 2, 3):
        rollout, log, _ = _rollout("canary", challenger, fraction=0.2, seed=seed)
        requests = _requests(rows, 5000, prefix=f"s{seed}-")
        versions: list[str] = []
        for start in range(0, len(requests), 64):
            for _, body in rollout.predict(requests[start : start + 64], champion):
                answer = orjson.loads(body)
                first = answer if isinstance(answer, dict) else answer[0]
                versions.append(first["model_version"])
        share = versions.count("2") / len(versions)
        assert abs(share - 0.2) <= 0.025, share
        # Every answer names the version that scored it, and the log agrees.
        by_arm = {b.arm: b.model_version for b in log.batches}
        assert by_arm == {"champion": "1", "challenger": "2"}


def test_canary_answers_of_each_arm_are_that_models_scores(
    models: tuple[ServedModel, ServedModel], rows: list[tuple[Any, ...]]
) -> None:
    champion, challenger = models
    rollout, _, _ = _rollout("canary", challenger, fraction=0.5)
    requests = _requests(rows, 200)
    answers = rollout.predict(requests, champion)
    assert len(answers) == len(requests)
    for request, (status, body) in zip(requests, answers, strict=True):
        assert status == 200
        answer = orjson.loads(body)
        items = [answer] if isinstance(answer, dict) else answer
        model = challenger if items[0]["model_version"] == "2" else champion
        expected = model.scorer.proba(request[2]).tolist()
        # (within rounding: the arm's requests were scored together, in another batch size)
        assert np.allclose([a["probability"] for a in items], expected, rtol=0, atol=1e-12)
        assert all(a["request_id"] == request[0] for a in items)


@pytest.mark.parametrize("sticky", ["X-Request-ID", "job", "X-User"])
def test_a_sticky_key_always_lands_on_the_same_arm(
    models: tuple[ServedModel, ServedModel], rows: list[tuple[Any, ...]], sticky: str
) -> None:
    champion, challenger = models
    bank = artifacts()
    seen: dict[str, set[str]] = {}
    for seed in range(3):  # other workers / restarts: other random states, the same arms
        rollout, _, _ = _rollout("canary", challenger, fraction=0.3, sticky=sticky, seed=seed)
        requests: list[tuple[Any, ...]] = []
        for i in range(600):
            key = f"user-{i % 40}"
            row = rows[i % len(rows)]
            rid = key if sticky == "X-Request-ID" else f"q{seed}-{i}"
            requests.append((rid, 1.0, [row], True, 0, key))
        for start in range(0, len(requests), 64):
            chunk = requests[start : start + 64]
            for request, (_, body) in zip(chunk, rollout.predict(chunk, champion), strict=True):
                if sticky == "job":
                    key = str(request[2][0][bank.features.index("job")])
                else:
                    key = request[5]
                seen.setdefault(key, set()).add(orjson.loads(body)["model_version"])
    assert all(len(arms) == 1 for arms in seen.values()), seen
    assert {v for arms in seen.values() for v in arms} == {"1", "2"}


def test_sticky_share_is_stable_and_uniform() -> None:
    assert sticky_share("abc") == sticky_share("abc")
    shares = np.array([sticky_share(f"key-{i}") for i in range(20000)])
    assert abs(float(np.mean(shares < 0.2)) - 0.2) < 0.01
    chooser = ArmChooser(None, ["a"], random.Random(0))
    assert chooser.key(("id", 1.0, [("x",)], True, 0)) is None


def test_a_challenger_that_raises_never_changes_a_champion_answer(
    models: tuple[ServedModel, ServedModel], rows: list[tuple[Any, ...]]
) -> None:
    champion, _ = models
    broken = ServedModel("plumbline-classifier", "9", "registry", _Raising(), time.time())
    requests = _requests(rows, 200)
    expected = _off_answers(champion, requests)

    shadow, log, metrics = _rollout("shadow", broken)
    assert shadow.predict(requests, champion) == expected
    shadow.drain()
    assert metrics.totals["challenger"]["errors"] == len(requests)
    assert all(b.shadow_probabilities is None and b.shadow_version is None for b in log.batches)

    canary, _, metrics = _rollout("canary", broken, fraction=0.5)
    assert canary.predict(requests, champion) == expected  # all fall back to the champion
    assert 0 < metrics.totals["challenger"]["errors"] < len(requests)
    assert metrics.totals["champion"]["requests"] == len(requests)


def test_a_challenger_that_did_not_load_sends_its_share_to_the_champion(
    models: tuple[ServedModel, ServedModel], rows: list[tuple[Any, ...]]
) -> None:
    champion, _ = models
    requests = _requests(rows, 500)
    expected = _off_answers(champion, requests)
    for mode in ("shadow", "canary"):
        rollout, _, metrics = _rollout(mode, None, fraction=0.2)
        assert rollout.challenger is not None
        rollout.challenger.last_error = "version 2 rejected: smoke check failed"
        assert rollout.predict(requests, champion) == expected
        errors = metrics.totals["challenger"]["errors"]
        assert (errors == len(requests)) if mode == "shadow" else (50 < errors < 150)


def test_explained_requests_are_answered_by_the_champion_during_a_rollout(
    models: tuple[ServedModel, ServedModel], rows: list[tuple[Any, ...]]
) -> None:
    """An explanation is the champion's: explained requests skip the rollout (answered as with
    it off), the others are the rollout's (here a canary answering all of them)."""
    champion, challenger = models
    requests = [(*r[:4], 2) if i % 5 == 0 else r for i, r in enumerate(_requests(rows, 40))]
    expected = _off_answers(champion, requests)
    rollout, log, _ = _rollout("canary", challenger, fraction=1.0)
    api: Any = PredictAPI.__new__(PredictAPI)
    api.models = _Manager(champion)
    api.threshold = THRESHOLD
    api.metrics = ServeMetrics(False, role="worker")
    api.predlog = None
    api.rollout = rollout
    got = PredictAPI.predict(api, requests)
    assert len(got) == len(requests)
    for request, answer, off in zip(requests, got, expected, strict=True):
        if request[4]:
            assert answer == off
        else:
            body = orjson.loads(answer[1])
            assert {
                item["model_version"] for item in (body if isinstance(body, list) else [body])
            } == {"2"}
    assert sum(len(b.rows) for b in log.batches) == sum(len(r[2]) for r in requests if not r[4])


class _Slow:
    """A challenger whose every call takes ``seconds`` (a hung one: a long sleep)."""

    kind = "slow"

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self.calls = 0

    def proba(self, rows: Any) -> np.ndarray:
        self.calls += 1
        time.sleep(self.seconds)
        return np.asarray(self.inner.proba(rows))


def test_a_slow_challenger_never_delays_a_shadow_answer(
    models: tuple[ServedModel, ServedModel], rows: list[tuple[Any, ...]]
) -> None:
    champion, challenger = models
    slow = _Slow(challenger.scorer, 0.3)
    hung = ServedModel("plumbline-classifier", "3", "registry", slow, time.time())
    requests = _requests(rows, 64)
    expected = _off_answers(champion, requests, 8)
    rollout, log, metrics = _rollout("shadow", hung, shadow_queue_batches=2)
    got: list[Any] = []
    started = time.perf_counter()
    for start in range(0, len(requests), 8):
        got += rollout.predict(requests[start : start + 8], champion)
    took = time.perf_counter() - started
    assert got == expected
    # Eight batches against a challenger taking 0.3 s each: answered long before even one
    # challenger call could finish in line.
    assert took < 0.25
    assert metrics.skipped["busy"] > 0  # beyond the queue: logged without the shadow score
    rollout.drain()
    assert sum(len(b.request_ids) for b in log.batches) == len(requests)
    shadowed = [b for b in log.batches if b.shadow_probabilities is not None]
    assert 0 < len(shadowed) < len(log.batches)


def test_the_breaker_pauses_shadow_scoring_after_calls_over_budget(
    models: tuple[ServedModel, ServedModel], rows: list[tuple[Any, ...]]
) -> None:
    champion, challenger = models
    slow = _Slow(challenger.scorer, 0.03)
    served = ServedModel("plumbline-classifier", "3", "registry", slow, time.time())
    bank = artifacts()
    log = _Log()
    metrics = ArmMetrics(False)
    cfg = RolloutConfig(
        mode="shadow", shadow_budget_ms=10, shadow_budget_calls=3, shadow_cooloff_s=60
    )
    manager: Any = _Manager(served)
    rollout = Rollout(
        cfg,
        bank.features,
        THRESHOLD,
        metrics,
        log,
        lambda *a: None,
        lambda: manager,  # type: ignore[arg-type]
    )
    rollout._apply(RolloutState.from_config(cfg))
    requests = _requests(rows, 10)
    for i in range(10):
        rollout.predict(requests[i : i + 1], champion)
        rollout.drain()  # one at a time: the queue never fills, only the budget counts
    assert slow.calls == 3  # the third over-budget call opened the breaker
    assert rollout.breaker.paused()
    assert metrics.skipped["over_budget"] == 7
    assert metrics.totals["challenger"]["errors"] == 0
    assert len(log.batches) == 10


def test_the_breaker_closes_after_the_cooloff_and_a_fast_call_resets_the_count() -> None:
    from plumbline.serving.rollout.router import Breaker

    now = [0.0]
    breaker = Breaker(0.01, 2, 5.0, clock=lambda: now[0])
    assert not breaker.record(0.02)
    assert not breaker.record(0.001)  # a call within budget: the run starts again
    assert not breaker.record(0.02)
    assert breaker.record(0.02)
    assert breaker.paused()
    now[0] = 5.1
    assert not breaker.paused()


def test_requests_while_the_challenger_loads_are_not_errors(
    models: tuple[ServedModel, ServedModel], rows: list[tuple[Any, ...]]
) -> None:
    champion, _ = models
    requests = _requests(rows, 300)
    expected = _off_answers(champion, requests)
    for mode in ("shadow", "canary"):
        rollout, _, metrics = _rollout(mode, None, fraction=0.5)  # loading: no error yet
        assert rollout.predict(requests, champion) == expected
        assert metrics.totals["challenger"]["errors"] == 0
        loading = metrics.skipped["loading"]
        assert (loading == len(requests)) if mode == "shadow" else (0 < loading < len(requests))
