"""The promotion subcommands: gate, promote, rollback, models, report, lineage, bootstrap."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from plumbline.cli.context import Command, Context
from plumbline.core.errors import MissingInput


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
    from plumbline.promotion.registry import CHALLENGER, CHAMPION, Registry

    verdict = GateResult.read(ctx.paths / GATE_FILE)
    registry = Registry.from_params(ctx.params, ctx.root)
    done = registry.promote(ctx.params, ctx.paths, verdict, args.challenger_only)
    card = attach(registry.client, registry.name, done.version, ctx.paths / MODEL_CARD_FILE)
    what = (
        f"{'found' if done.reused else 'registered'} {registry.name!r} version "
        f"{done.version}; {CHALLENGER} -> {done.version}; model card: {card or 'none'}"
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
    from plumbline.promotion.registry import CHAMPION, Registry

    registry = Registry.from_params(ctx.params, ctx.root)
    event = registry.rollback(args.reason)
    return (
        f"{registry.name!r}: {CHAMPION} rolled back from version {event.from_version} "
        f"to version {event.to_version}"
    )


def cmd_models(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.pipeline.model_card import CARD_TAG
    from plumbline.promotion.registry import CHAMPION, Registry, history_lines, versions_table

    registry = Registry.from_params(ctx.params, ctx.root)
    rows = registry.versions()
    if not rows:
        return f"registered model {registry.name!r} has no versions in {registry.uri}"
    print(versions_table(rows))
    events = registry.history()
    if events:
        print(f"\n{CHAMPION} history (latest last):")
        print("\n".join(history_lines(events)))
    champion = registry.alias_version(CHAMPION)
    card = next((r.tags.get(CARD_TAG) for r in rows if r.version == champion), None)
    if card:
        print(f"\n{CHAMPION} model card: {card} (also the version's description)")
    return (
        f"{len(rows)} version{'s' if len(rows) != 1 else ''} of {registry.name!r}; "
        f"{CHAMPION}: "
        f"{'version ' + champion if champion else 'none'}"
    )


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

    registry = Registry.from_params(ctx.params, ctx.root)
    # Retrains of a project outside git commit to a snapshot repository in the state dir.
    repos = [ctx.root, ctx.params.resolve(ctx.params.monitor.state_dir) / SNAPSHOT_DIR]
    if args.request_id is not None:
        log_dir = ctx.params.resolve(
            args.log_dir
            or ctx.params.monitor.prediction_log_dir
            or ctx.params.serve.prediction_log.dir
        )
        chain = trace_request(
            lambda name: Registry(name, registry.uri), log_dir, args.request_id, repos
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

    champion = bootstrap(ctx.root, args.source)
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
