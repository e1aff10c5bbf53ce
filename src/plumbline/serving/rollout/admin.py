"""``GET`` / ``POST /admin/rollout``: read and switch the rollout mode of a running server.

Both are guarded by the governance roles, like ``/admin/reload``: ``GET`` needs ``viewer``,
``POST`` ``operator`` (a personal token, the authenticating proxy, or the deprecated
``serve.admin_token_env`` token). A switch is recorded in the audit trail as ``rollout_mode``,
with who made it and the mode before and after. A POST writes
``{"mode", "canary_fraction", "seq"}`` to the server's shared state; every inference worker
applies it within 50 ms (:mod:`plumbline.serving.rollout.router`) and reports the ``seq`` it
applied. The answer comes once every worker applied it and, for shadow or canary, once each
worker's challenger is loaded or has failed to load (up to ``LOAD_WAIT_S``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from plumbline.serving.reload import worker_key
from plumbline.serving.rollout.router import (
    ROLLOUT_KEY,
    RolloutState,
    challenger_key,
    worker_rollout_key,
)

if TYPE_CHECKING:
    from plumbline.governance.settings import Role

APPLY_WAIT_S = 10.0
LOAD_WAIT_S = 60.0


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "shadow", "canary"]
    # Strict: JSON true is not 1.0, nor "0.5" a number (an integer 0 or 1 still is).
    canary_fraction: StrictFloat | None = Field(
        default=None, ge=0.0, le=1.0, description="canary mode: the challenger's share"
    )

    @model_validator(mode="after")
    def _fraction_is_for_canary(self) -> RolloutRequest:
        if self.canary_fraction is not None and self.mode != "canary":
            raise PydanticCustomError(
                "canary_only",
                "canary_fraction is for mode canary, not {mode}",
                {"mode": self.mode},
            )
        return self


def parse(raw: bytes) -> RolloutRequest | Response:
    """The POST body, or the 422 naming the field at fault."""
    try:
        return RolloutRequest.model_validate_json(raw)
    except ValidationError as err:
        problems = [
            # The only model-level check is about canary_fraction: name it.
            {"loc": list(e["loc"] or ("canary_fraction",)), "msg": e["msg"]}
            for e in err.errors()
        ]
        return JSONResponse({"detail": problems}, status_code=422)


class Access(Protocol):
    """The server's admin guard (:class:`plumbline.serving.server.AdminAccess`)."""

    async def admit(self, request: Request, needs: Role) -> Any: ...

    async def arecord(
        self,
        action: str,
        actor: Any,
        subject: dict[str, Any],
        evidence: dict[str, Any] | None = None,
    ) -> None: ...


class RolloutAdmin:
    def __init__(self, settings: Any, shared: Callable[[], Any], access: Access) -> None:
        self.settings = settings
        self.shared = shared
        self.access = access

    def _current(self, state: dict[str, Any]) -> RolloutState:
        return RolloutState.from_shared(
            state.get(ROLLOUT_KEY), RolloutState.from_config(self.settings.serve.rollout)
        )

    def status(self, state: dict[str, Any]) -> dict[str, Any]:
        cfg = self.settings.serve.rollout
        workers = [
            state.get(worker_rollout_key(i)) for i in range(self.settings.serve.inference_workers)
        ]
        challengers = [
            state.get(challenger_key(i)) for i in range(self.settings.serve.inference_workers)
        ]
        arms: dict[str, dict[str, float]] = {}
        for worker in workers:
            for arm, values in ((worker or {}).get("arms") or {}).items():
                total = arms.setdefault(arm, {})
                for key, value in values.items():
                    total[key] = total.get(key, 0) + value
        skipped: dict[str, int] = {}
        for worker in workers:
            for reason, count in ((worker or {}).get("skipped") or {}).items():
                skipped[reason] = skipped.get(reason, 0) + int(count)
        models = [(state.get(worker_key(i)) or {}).get("model") for i in range(len(workers))]
        champion = next((m for m in models if m), None)
        held = [c.get("model") for c in challengers if c and c.get("model")]
        errors = [c.get("error") for c in challengers if c and c.get("error")]
        return {
            **self._current(state).to_dict(),
            "sticky_key": cfg.sticky_key,
            "challenger_alias": cfg.challenger_alias,
            "champion": champion,
            "challenger": held[0] if held else None,
            "challenger_ready": bool(workers) and len(held) == len(workers),
            "challenger_error": errors[0] if errors else None,
            "arms": arms,
            "skipped": skipped,
            "shadow_paused": any((w or {}).get("shadow_paused") for w in workers),
            "workers": workers,
        }

    def _state(self) -> dict[str, Any]:
        try:
            return dict(self.shared().copy())
        except Exception:
            return {}

    async def handle(self, request: Request) -> Response:
        return await (self.post(request) if request.method == "POST" else self.get(request))

    async def get(self, request: Request) -> Response:
        actor = await self.access.admit(request, "viewer")
        if isinstance(actor, Response):
            return actor
        return JSONResponse(self.status(await asyncio.to_thread(self._state)))

    async def post(self, request: Request) -> Response:
        actor = await self.access.admit(request, "operator")
        if isinstance(actor, Response):
            return actor
        body = parse(await request.body())
        if isinstance(body, Response):
            return body
        state = await asyncio.to_thread(self._state)
        current = self._current(state)
        fraction = (
            body.canary_fraction if body.canary_fraction is not None else current.canary_fraction
        )
        wanted = RolloutState(body.mode, fraction, current.seq + 1)
        await asyncio.to_thread(self.shared().__setitem__, ROLLOUT_KEY, wanted.to_dict())
        # Recorded once written: the workers apply it whether or not this request waits.
        await self.access.arecord(
            "rollout_mode",
            actor,
            {
                "model": self.settings.params.mlflow.model_name,
                "from": current.mode,
                "to": wanted.mode,
                "canary_fraction": wanted.canary_fraction,
                "challenger_alias": self.settings.serve.rollout.challenger_alias,
            },
            {"seq": wanted.seq},
        )
        workers = self.settings.serve.inference_workers
        started = time.monotonic()
        while time.monotonic() - started < APPLY_WAIT_S + (
            LOAD_WAIT_S if wanted.mode != "off" else 0
        ):
            state = await asyncio.to_thread(self._state)
            applied = [state.get(worker_rollout_key(i)) or {} for i in range(workers)]
            if all(int(w.get("seq", -1)) >= wanted.seq for w in applied):
                if wanted.mode == "off":
                    break
                challengers = [state.get(challenger_key(i)) or {} for i in range(workers)]
                if all(c.get("ready") or c.get("error") for c in challengers):
                    break
            elif time.monotonic() - started > APPLY_WAIT_S:
                return JSONResponse(
                    {"detail": "workers did not apply the rollout in time", **self.status(state)},
                    status_code=504,
                )
            await asyncio.sleep(0.05)
        return JSONResponse(self.status(state))


def document(
    paths: dict[str, Any],
    described: Callable[..., dict[str, Any]],
    refusals: Callable[[str, Callable[..., dict[str, Any]]], dict[str, Any]],
) -> None:
    """The OpenAPI entries of the two routes (called from the server's _openapi);
    ``refusals(role, described)`` gives a route's 401 and 403."""
    route = paths.get("/admin/rollout") or {}
    if "get" in route:
        route["get"]["summary"] = "The rollout: mode, both models, per-arm counts (role viewer)"
        route["get"]["operationId"] = "rollout_status"
        route["get"]["security"] = [{"adminToken": []}]
        route["get"]["responses"] = {
            "200": described(
                "The rollout mode, both models and per-arm counts", {"type": "object"}
            ),
            **refusals("viewer", described),
        }
    if "post" in route:
        route["post"]["summary"] = "Switch the rollout: off, shadow or canary (role operator)"
        route["post"]["operationId"] = "rollout_switch"
        route["post"]["security"] = [{"adminToken": []}]
        route["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": RolloutRequest.model_json_schema()}},
        }
        route["post"]["responses"] = {
            "200": described("The rollout now applied by every worker", {"type": "object"}),
            **refusals("operator", described),
            "422": described("Invalid body"),
            "504": described("The workers did not apply it in time"),
        }
