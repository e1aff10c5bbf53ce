"""The promotion subcommands: gate, promote, rollback, models, approvals, approve, reject,
report, lineage, bootstrap.

Commands that change the registry act as the person ``PLUMBLINE_TOKEN`` names (else the local
operating-system user, recorded as such) and record what they did in the audit trail.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from plumbline.cli.context import Command, Context
from plumbline.core.errors import MissingInput

if TYPE_CHECKING:
    from plumbline.governance.identity import Actor
    from plumbline.governance.settings import Role
    from plumbline.governance.trail import AuditTrail
    from plumbline.promotion.registry import Registry


def _governed(
    ctx: Context, needs: Role, command: str, named: bool = False
) -> tuple[Registry, Actor]:
    """The registry on the project's audit trail, and who runs the command (refused without
    the role ``needs``; ``named``: a local actor is refused once any user exists). A refusal
    is an audit record, as on the HTTP routes."""
    from plumbline.governance.identity import Forbidden, Users, cli_actor, role_allows
    from plumbline.governance.trail import AuditTrail
    from plumbline.promotion.registry import Registry

    trail = AuditTrail.for_project(ctx.params.audit, ctx.root)
    users = Users(trail.engine)
    actor = cli_actor(users, os.environ)
    if named and actor.via == "local" and not users.empty():
        reason = (
            f"{actor.name} is not a named person: set PLUMBLINE_TOKEN to your own token "
            "(`plumbline users token NAME`)"
        )
    elif not role_allows(actor.role, needs):
        reason = f"role {needs} needed; {actor.name} (via {actor.via}) is {actor.role}"
    else:
        return Registry.from_params(ctx.params, ctx.root, trail), actor
    trail.append(
        "refused", actor, {"command": command}, {"needs": needs, "role": actor.role}, reason
    )
    raise Forbidden(reason, actor, needs)


def _trail(ctx: Context) -> AuditTrail:
    from plumbline.governance.trail import AuditTrail

    return AuditTrail.for_project(ctx.params.audit, ctx.root)


def cmd_gate(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.model.verdict import GATE_FILE, GateFailed
    from plumbline.promotion import gate

    if getattr(args, "retrain", False):
        from plumbline.promotion import retrain_gate

        result = retrain_gate.run(ctx.params, ctx.contract, ctx.paths)
    else:
        result = gate.run(ctx.params, ctx.contract, ctx.paths)
    if not result.passed:
        raise GateFailed(result.failure_message())
    return f"{result.summary()}; wrote {GATE_FILE}"


def cmd_promote(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.model.verdict import GATE_FILE, GateResult
    from plumbline.pipeline.model_card import MODEL_CARD_FILE, attach
    from plumbline.promotion.approvals import promote_candidate
    from plumbline.promotion.registry import CHALLENGER, CHAMPION

    verdict = GateResult.read(ctx.paths / GATE_FILE)
    registry, actor = _governed(ctx, "operator", "promote")
    done, request = promote_candidate(
        registry, ctx.params, ctx.paths, verdict, actor, args.challenger_only
    )
    card = attach(registry.client, registry.name, done.version, ctx.paths / MODEL_CARD_FILE)
    what = (
        f"{'found' if done.reused else 'registered'} {registry.name!r} version "
        f"{done.version}; {CHALLENGER} -> {done.version}; model card: {card or 'none'}"
    )
    if request is not None:
        return (
            f"{what}; gate passed, version {done.version} waits for {request.missing} "
            f"approval{'s' if request.missing != 1 else ''} ({len(request.approvals)} of "
            f"{request.required} so far; `plumbline approvals`, `plumbline approve "
            f"{done.version} --comment ...`); {CHAMPION} stays "
            f"{'version ' + done.champion_before if done.champion_before else 'unset'}"
        )
    if args.challenger_only:
        return (
            f"{what}; {CHAMPION} stays "
            f"{'version ' + done.champion_before if done.champion_before else 'unset'} "
            f"(challenger only; gate {'passed' if done.passed else 'failed'})"
        )
    if done.champion_moved:
        return f"{what}; {CHAMPION} -> {done.version} (was {done.champion_before or 'none'})"
    if done.passed:
        return f"{what}; version {done.version} already is {CHAMPION}"
    return (
        f"{what}; gate failed, {CHAMPION} stays "
        f"{'version ' + done.champion_before if done.champion_before else 'unset'}"
    )


def cmd_rollback(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.promotion.registry import CHAMPION

    registry, actor = _governed(ctx, "approver", "rollback")
    event = registry.rollback(args.reason, actor)
    return (
        f"{registry.name!r}: {CHAMPION} rolled back from version {event.from_version} "
        f"to version {event.to_version}"
    )


def cmd_models(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.pipeline.model_card import CARD_TAG
    from plumbline.promotion.approvals import pending
    from plumbline.promotion.registry import CHAMPION, Registry, history_lines, versions_table

    trail = _trail(ctx)
    registry = Registry.from_params(ctx.params, ctx.root, trail)
    rows = registry.versions()
    if not rows:
        return f"registered model {registry.name!r} has no versions in {registry.uri}"
    print(versions_table(rows))
    events = registry.history()
    if events:
        print(f"\n{CHAMPION} history (latest last, from the audit trail):")
        print("\n".join(history_lines(events)))
    waiting = pending(trail, registry, ctx.params.promotion.approvals)
    if waiting:
        print("\npending approval:")
        for p in waiting:
            print(
                f"  version {p.version}: {len(p.approvals)} of {p.required} approvals "
                f"(by {p.author} at {p.requested_at}; expires {p.expires_at})"
            )
    champion = registry.alias_version(CHAMPION)
    card = next((r.tags.get(CARD_TAG) for r in rows if r.version == champion), None)
    if card:
        print(f"\n{CHAMPION} model card: {card} (also the version's description)")
    return (
        f"{len(rows)} version{'s' if len(rows) != 1 else ''} of {registry.name!r}; "
        f"{CHAMPION}: "
        f"{'version ' + champion if champion else 'none'}"
    )


def cmd_approvals(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.promotion.approvals import pending, pending_text
    from plumbline.promotion.registry import Registry

    trail = _trail(ctx)
    registry = Registry.from_params(ctx.params, ctx.root, trail)
    waiting = pending(trail, registry, ctx.params.promotion.approvals)
    if args.json:
        print(json.dumps([p.to_json() for p in waiting], indent=2))
    elif waiting:
        print(pending_text(waiting))
    required = ctx.params.promotion.approvals.required
    if not waiting:
        return (
            f"no version of {registry.name!r} waits for approval "
            f"(promotion.approvals.required: {required})"
        )
    return f"{len(waiting)} version{'s' if len(waiting) != 1 else ''} of {registry.name!r} wait"


def _decide(ctx: Context, args: argparse.Namespace, approving: bool) -> str:
    from plumbline.promotion import approvals

    registry, actor = _governed(ctx, "approver", args.command, named=True)
    decide = approvals.approve if approving else approvals.reject
    decision = decide(
        registry.trail,
        registry,
        args.version,
        actor,
        args.comment,
        ctx.params.promotion.approvals,
    )
    return f"{registry.name!r}: {decision.message}"


def cmd_approve(ctx: Context, args: argparse.Namespace) -> str:
    return _decide(ctx, args, approving=True)


def cmd_reject(ctx: Context, args: argparse.Namespace) -> str:
    return _decide(ctx, args, approving=False)


def cmd_report(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.promotion import pr_report

    done = pr_report.write(ctx.paths, base=args.base, output=args.output)
    against = f"against {done.base.ref}" if done.base else "with no base branch"
    gate = {None: "not run", True: "passed", False: "failed"}[done.gate_passed]
    plots = len(done.images)
    return f"wrote {done.path} ({against}; gate {gate}; {plots} plot{'s' if plots != 1 else ''})"


def cmd_lineage(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.promotion.lineage import LineageIncomplete, trace_request, trace_version
    from plumbline.promotion.registry import Registry

    if (args.version is None) == (args.request_id is None):
        raise MissingInput("give a model VERSION or --request-id ID (one of them)")
    from plumbline.monitoring.workspace import SNAPSHOT_DIR

    trail = _trail(ctx)
    registry = Registry.from_params(ctx.params, ctx.root, trail)
    # Retrains of a project outside git commit to a snapshot repository in the state dir.
    repos = [ctx.root, ctx.params.resolve(ctx.params.monitor.state_dir) / SNAPSHOT_DIR]
    if args.request_id is not None:
        log_dir = ctx.params.resolve(
            args.log_dir
            or ctx.params.monitor.prediction_log_dir
            or ctx.params.serve.prediction_log.dir
        )
        chain = trace_request(
            lambda name: Registry(name, registry.uri, trail), log_dir, args.request_id, repos
        )
        what = f"request {args.request_id}"
    else:
        chain = trace_version(registry, args.version, repos)
        what = f"{registry.name!r} version {args.version}"
    print(json.dumps(chain.to_json(), indent=2) if args.json else chain.text())
    if not chain.complete:
        raise LineageIncomplete(
            f"the lineage of {what} is incomplete; missing: "
            + "; ".join(f"{link.name} ({link.missing})" for link in chain.missing)
        )
    return f"the lineage of {what} is complete ({len(chain.links)} links)"


def cmd_bootstrap(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.promotion.first_champion import bootstrap

    champion = bootstrap(
        ctx.root,
        args.source,
        args.webhook_token_file,
        args.outputs_only,
        args.wait_tracking_s,
        args.wait_audit_s,
    )
    if args.outputs_only:
        return f"the pipeline's outputs are in {ctx.root}; the registry was not touched"
    return f"champion is version {champion}; the API can serve it"


def _gate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--retrain",
        action="store_true",
        help="the automatic retrain's gate: challenger vs re-scored champion on the "
        "same newest rows, paired bootstrap (retrain.comparison)",
    )


def _promote_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--challenger-only",
        action="store_true",
        help="point challenger at the candidate, leave champion alone (for a rollout)",
    )


def _rollback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reason", default="manual rollback", help="why (kept in the promotion history)"
    )


def _approvals_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _decision_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("version", help="registered model version")
    p.add_argument("--comment", required=True, help="what you checked (kept in the audit trail)")


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base",
        default=None,
        help="git ref to compare with (default: the PR base branch, else origin/main or main)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write (default: report.md at the project root)",
    )


def _lineage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("version", nargs="?", default=None, help="registered model version")
    p.add_argument("--request-id", default=None, help="a prediction's request id")
    p.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="prediction log (default: monitor.prediction_log_dir, else serve.prediction_log.dir)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _bootstrap_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        type=Path,
        default=os.environ.get("PLUMBLINE_PROJECT_SOURCE") or None,
        help="project files to lay out in the workspace first "
        "(default: $PLUMBLINE_PROJECT_SOURCE; unset = run in place)",
    )
    p.add_argument(
        "--webhook-token-file",
        type=Path,
        default=None,
        help="keep a valid token of the service account `alertmanager` (operator) in this "
        "file, for Alertmanager's webhook to the monitor",
    )
    p.add_argument(
        "--outputs-only",
        action="store_true",
        help="lay out the project and run `dvc repro`, nothing more: no gate, no promotion "
        "(a monitor's workspace)",
    )
    p.add_argument(
        "--wait-tracking-s",
        type=float,
        default=300.0,
        help="wait this long for an HTTP tracking server (MLFLOW_TRACKING_URI) to answer "
        "/health before running the pipeline (default: 300; 0 = check once)",
    )
    p.add_argument(
        "--wait-audit-s",
        type=float,
        default=300.0,
        help="wait this long for the governance database (PLUMBLINE_AUDIT_URL) to accept the "
        "login with its tables made (default: 300; 0 = try once)",
    )


COMMANDS = [
    Command(
        "gate",
        "check reports/metrics.json against params and the champion",
        cmd_gate,
        _gate_arguments,
    ),
    Command(
        "promote",
        "register the candidate; move champion if the gate passed",
        cmd_promote,
        _promote_arguments,
    ),
    Command(
        "rollback",
        "move champion back to the previous champion",
        cmd_rollback,
        _rollback_arguments,
    ),
    Command("models", "list registered versions with aliases, metrics, verdicts", cmd_models),
    Command(
        "approvals",
        "candidates waiting for approval, with their evidence",
        cmd_approvals,
        _approvals_arguments,
    ),
    Command(
        "approve",
        "approve a pending candidate (the last approval moves champion)",
        cmd_approve,
        _decision_arguments,
    ),
    Command(
        "reject",
        "reject a pending candidate (it stays registered, loses challenger)",
        cmd_reject,
        _decision_arguments,
    ),
    Command(
        "report", "write report.md: gate, metrics/params diff, plots", cmd_report, _report_arguments
    ),
    Command(
        "lineage",
        "a version's or a prediction's chain: run, commit, params, data",
        cmd_lineage,
        _lineage_arguments,
    ),
    Command(
        "bootstrap",
        "a new stack's first champion: dvc repro, gate, promote (the compose one-shot)",
        cmd_bootstrap,
        _bootstrap_arguments,
    ),
]
