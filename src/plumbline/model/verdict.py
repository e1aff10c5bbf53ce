"""The gate's verdict as data: what ``plumbline gate`` writes and ``plumbline promote`` reads.

Kept apart from the gate's logic so that the registry can record a verdict without importing
the gate (which itself reads the registry to re-score the champion).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from plumbline.core.errors import MissingInput, PlumblineError

GATE_FILE = "reports/gate.json"


class GateFailed(PlumblineError):
    """The candidate did not pass; the message holds one line per failed check."""


@dataclass
class Check:
    name: str
    metric: str
    value: float | None
    threshold: float
    comparison: Literal[">=", "<=", "=="]
    passed: bool
    reason: str = ""


@dataclass
class GateResult:
    passed: bool
    model_name: str
    candidate: dict[str, Any]
    champion: dict[str, Any] | None
    max_regression: float
    note: str
    checks: list[Check] = field(default_factory=list)
    created_at: str = ""
    # The retrain gate's paired comparison (plumbline.promotion.retrain_gate); None for the offline
    # gate.
    comparison: dict[str, Any] | None = None

    @property
    def reasons(self) -> list[str]:
        return [c.reason for c in self.checks if not c.passed]

    @property
    def champion_version(self) -> str | None:
        return None if self.champion is None else str(self.champion["version"])

    def summary(self) -> str:
        n_pass = sum(c.passed for c in self.checks)
        verdict = "passed" if self.passed else "failed"
        return f"{verdict} {n_pass} of {len(self.checks)} checks; {self.note}"

    def failure_message(self, path: str = GATE_FILE) -> str:
        failed = len(self.reasons)
        lines = [f"gate failed {failed} of {len(self.checks)} checks (details in {path}):"]
        lines.extend(f"  - {reason}" for reason in self.reasons)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = self.reasons
        return out

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> GateResult:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise MissingInput(f"{path} not found: run `plumbline gate` first") from None
        except json.JSONDecodeError as err:
            raise GateFailed(
                f"{path} is not valid JSON ({err}): run `plumbline gate` again"
            ) from None
        try:
            raw.pop("reasons", None)
            raw["checks"] = [Check(**c) for c in raw.get("checks", [])]
            return cls(**raw)
        except (AttributeError, TypeError) as err:
            raise GateFailed(
                f"{path} is not a gate verdict ({err}): run `plumbline gate` again"
            ) from None


def unscored_champion(error: tuple[str, str]) -> tuple[Check, dict[str, Any]]:
    """The failing check and the champion entry of a gate whose champion (version, reason)
    could not be re-scored."""
    version, reason = error
    check = Check("champion_rescored", "", None, 0.0, "==", False, reason)
    return check, {"version": version, "metrics": None, "error": reason}


def gate_result(
    model_name: str,
    candidate: dict[str, Any] | None,
    metrics: dict[str, float],
    checks: list[Check],
    champion: dict[str, Any] | None,
    max_regression: float,
    note: str,
    comparison: dict[str, Any] | None = None,
) -> GateResult:
    """A gate's verdict, stamped now: passed when every check passed."""
    return GateResult(
        passed=all(c.passed for c in checks),
        model_name=model_name,
        candidate={**(candidate or {}), "metrics": metrics},
        champion=champion,
        max_regression=max_regression,
        note=note,
        checks=checks,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        comparison=comparison,
    )
