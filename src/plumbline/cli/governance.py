"""``plumbline users ...`` and ``plumbline audit ...``: people, their roles and tokens, and the
audit trail.

Who runs a command is :func:`~plumbline.governance.identity.cli_actor`: PLUMBLINE_TOKEN's user,
else the local operating-system user. Managing users needs an admin; once any user exists that
admin must be named by a token (the first ``users add``, of an admin, needs none). Every change
of a user or token is itself an audit record.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from plumbline.cli.context import Command, Context
from plumbline.core.errors import PlumblineError
from plumbline.governance.settings import Role

if TYPE_CHECKING:
    # SQLAlchemy loads with these: imported where a command runs, not to build the parser.
    from plumbline.governance.identity import Actor, Users
    from plumbline.governance.trail import AuditTrail, Record

ROLES = get_args(Role)
SERVICE_ROLES = ("viewer", "operator")  # = governance.service_accounts.SERVICE_ROLES

SHOW_LAST = 20


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def trail_of(ctx: Context, wait_s: float = 0.0) -> AuditTrail:
    from plumbline.governance.trail import AuditTrail

    return AuditTrail.for_project(ctx.params.audit, ctx.root, wait_s)


def authorise(
    trail: AuditTrail, users: Users, needs: Role, command: str, named: bool = False
) -> Actor:
    """The actor running ``command`` if its role includes ``needs``; a refusal is recorded.
    ``named``: once any user exists, a local (token-less) actor is refused too."""
    from plumbline.governance.identity import Forbidden, cli_actor, role_allows

    actor = cli_actor(users, os.environ)
    if named and actor.via == "local" and not users.empty():
        reason = "set PLUMBLINE_TOKEN to an admin's token: users exist, so a person must be named"
    elif not role_allows(actor.role, needs):
        reason = f"role {needs} needed; {actor.name} is {actor.role}"
    else:
        return actor
    trail.append(
        "refused",
        actor,
        {"command": command},
        {"needs": needs, "role": actor.role},
        reason,
    )
    raise Forbidden(reason, actor, needs)


# --- users ---------------------------------------------------------------------------------


def users_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="a new user; prints its first token once")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--expires-days", type=_positive, default=None, help="token lifetime")
    sub.add_parser("list", help="users, roles and their tokens (ids and dates, never secrets)")
    token = sub.add_parser("token", help="another token for a user; prints it once")
    token.add_argument("name")
    token.add_argument("--expires-days", type=_positive, default=None, help="token lifetime")
    revoke = sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    role = sub.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    ensure = sub.add_parser(
        "ensure",
        help="a service account's token in a file: kept if valid, else the account or a new "
        "token is made (for deployments: Alertmanager's webhook)",
    )
    ensure.add_argument("name")
    ensure.add_argument("--role", required=True, choices=SERVICE_ROLES)
    ensure.add_argument("--token-file", type=Path, required=True, help="where the token is kept")


def _print_token(name: str, token_id: str, token: str, expires_days: float | None) -> None:
    expiry = f", expires in {expires_days:g} days" if expires_days else ""
    print(f"token {token_id} for {name}{expiry}; shown only now, keep it secret:")
    print(token)


def _users_table(users: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'user':<20} {'role':<9} {'token':<13} {'created':<20} {'expires':<20} revoked"]
    for user in users:
        name = user["name"] + (" (disabled)" if user["disabled"] else "")
        tokens = user["tokens"] or [{"id": "-", "created_at": user["created_at"]}]
        for t in tokens:
            lines.append(
                f"{name:<20} {user['role']:<9} {t['id']:<13} {_short(t.get('created_at')):<20} "
                f"{_short(t.get('expires_at')) or 'never':<20} {_short(t.get('revoked_at'))}"
            )
            name = ""
    return lines


def _short(at: str | None) -> str:
    """A record time to the second, for people."""
    return "" if not at else at[:19].replace("T", " ")


def cmd_users(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.governance.identity import Users, check_role, cli_actor

    trail = trail_of(ctx)
    try:
        users = Users(trail.engine)
        command = f"users {args.action}"
        if args.action == "add":
            role = check_role(args.role)
            if users.empty():
                # The first user: whoever has the project's shell makes the first admin.
                if role != "admin":
                    raise PlumblineError(
                        f"the first user must be an admin (--role admin), not {role}: "
                        "nobody could manage users otherwise"
                    )
                actor = cli_actor(users, os.environ)
            else:
                actor = authorise(trail, users, "admin", command, named=True)
            token_id, token = users.add(args.name, role, args.expires_days)
            trail.append(
                "user_add",
                actor,
                {"user": args.name, "role": role, "token_id": token_id},
                {"expires_days": args.expires_days},
            )
            _print_token(args.name, token_id, token, args.expires_days)
            return f"added {args.name} ({role}), token {token_id}"
        if args.action == "ensure":
            from plumbline.governance.service_accounts import ensure_token_file

            # Deployment tooling runs it from the project's shell (a local admin): service
            # accounts get at most operator, so no person's power is handed out this way.
            actor = authorise(trail, users, "admin", command)
            outcome = ensure_token_file(
                trail, users, args.name, check_role(args.role), args.token_file, actor
            )
            return f"{args.name} ({args.role}): token in {args.token_file} {outcome}"
        actor = authorise(trail, users, "admin", command, named=True)
        if args.action == "list":
            listed = users.list()
            print("\n".join(_users_table(listed)))
            return f"{len(listed)} users"
        if args.action == "token":
            token_id, token = users.token(args.name, args.expires_days)
            trail.append(
                "token_add",
                actor,
                {"user": args.name, "token_id": token_id},
                {"expires_days": args.expires_days},
            )
            _print_token(args.name, token_id, token, args.expires_days)
            return f"new token {token_id} for {args.name}"
        if args.action == "revoke":
            owner = users.owner(args.token_id)
            users.revoke(args.token_id)
            trail.append("token_revoke", actor, {"user": owner, "token_id": args.token_id})
            return f"revoked token {args.token_id} of {owner}"
        if args.action == "role":
            role = check_role(args.role)
            before = users.role(args.name)
            users.set_role(args.name, role)
            trail.append("role_change", actor, {"user": args.name, "from": before, "to": role})
            return f"{args.name}: {before} -> {role}"
        raise PlumblineError(f"unknown action {args.action!r}")  # argparse's choices stop it
    finally:
        trail.close()


# --- audit ---------------------------------------------------------------------------------


def audit_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("verify", help="check the whole hash chain; exit 1 naming the first bad record")
    show = sub.add_parser("show", help="records as a table, newest last")
    show.add_argument("--since", default=None, help="ISO-8601 time or date, or an age (7d, 12h)")
    show.add_argument(
        "--last", type=_count, default=None, help=f"the newest N (default {SHOW_LAST})"
    )
    export = sub.add_parser("export", help="records as JSON lines or CSV, with their hashes")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--since", default=None, help="ISO-8601 time or date, or an age (7d)")
    export.add_argument("--output", type=Path, default=None, help="file (default: stdout)")
    prune = sub.add_parser(
        "prune", help="delete records older than the retention, leaving a checkpoint record"
    )
    prune.add_argument(
        "--retain-days",
        type=int,
        default=None,
        help="keep this many days (default: audit.retain_days)",
    )
    grant = sub.add_parser(
        "grant",
        help="PostgreSQL, as the tables' owner: let ROLE (the application's login) only "
        "insert and read audit records",
    )
    grant.add_argument("role", metavar="ROLE", help="the PostgreSQL role the services log in as")
    grant.add_argument(
        "--wait-s",
        type=float,
        default=0.0,
        help="retry this long while the database is still starting (default: 0, try once)",
    )


def _subject(subject: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in subject.items() if v is not None)


def records_table(records: list[Record]) -> list[str]:
    """The records as a table for people: seq, time, actor (via), action, subject, comment."""
    rows = [("seq", "time (UTC)", "actor (via)", "action", "subject", "comment")]
    rows += [
        (
            str(r.seq),
            _short(r.at),
            f"{r.actor} ({r.via})",
            r.action,
            _subject(r.subject),
            r.comment.replace("\n", " "),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for row in rows:
        cells = [row[0].rjust(widths[0])]
        cells += [cell.ljust(width) for cell, width in zip(row[1:5], widths[1:], strict=True)]
        lines.append("  ".join([*cells, row[5]]).rstrip())
    return lines


def cmd_audit(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.governance.identity import Users

    trail = trail_of(ctx, getattr(args, "wait_s", 0.0))
    try:
        users = Users(trail.engine)
        action: Callable[[], str] = {
            "verify": lambda: _verify(trail, users),
            "show": lambda: _show(trail, users, args),
            "export": lambda: _export(trail, users, args),
            "prune": lambda: _prune(ctx, trail, users, args),
            "grant": lambda: _grant(trail, users, args),
        }[args.action]
        return action()
    finally:
        trail.close()


def _verify(trail: AuditTrail, users: Users) -> str:
    authorise(trail, users, "viewer", "audit verify")
    result = trail.verify()
    if not result.ok:
        raise PlumblineError(f"the audit trail does not verify: {result}")
    return f"{result} (head {result.head[:16]})"


def _show(trail: AuditTrail, users: Users, args: argparse.Namespace) -> str:
    authorise(trail, users, "viewer", "audit show")
    if args.since:
        records = trail.records(since=args.since)
        if args.last:
            records = records[-args.last :]
    else:
        records = trail.last(args.last or SHOW_LAST)
    print("\n".join(records_table(records)))
    return f"{len(records)} records"


def _export(trail: AuditTrail, users: Users, args: argparse.Namespace) -> str:
    authorise(trail, users, "viewer", "audit export")
    if args.output is None:
        # The summary line goes to stderr (main's rule for machine-readable output).
        args.json = True
        count = trail.export(sys.stdout, args.format, since=args.since)
        return f"exported {count} records"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8", newline="") as out:
        count = trail.export(out, args.format, since=args.since)
    return f"exported {count} records to {args.output}"


def _prune(ctx: Context, trail: AuditTrail, users: Users, args: argparse.Namespace) -> str:
    actor = authorise(trail, users, "admin", "audit prune", named=True)
    days = ctx.params.audit.retain_days if args.retain_days is None else args.retain_days
    if days < 1:
        raise PlumblineError(f"--retain-days must be at least 1, got {days}")
    checkpoint = trail.prune(days, actor=actor)
    if checkpoint is None:
        return f"nothing older than {days} days"
    first, last = checkpoint.evidence["removed"]
    return (
        f"removed records {first}..{last} ({checkpoint.evidence['count']}), older than "
        f"{days} days; checkpoint {checkpoint.seq}"
    )


def _grant(trail: AuditTrail, users: Users, args: argparse.Namespace) -> str:
    # No role check: the database lets only the tables' owner grant, whoever runs this.
    statements = trail.grant_app_role(args.role)
    print("\n".join(f"{statement};" for statement in statements))
    return f"{args.role} may now only insert and read audit records"


COMMANDS = [
    Command(
        "users",
        "people and their roles and tokens: add, list, token, revoke, role, ensure",
        cmd_users,
        users_arguments,
    ),
    Command(
        "audit",
        "the audit trail: verify its hash chain, show, export, prune, grant",
        cmd_audit,
        audit_arguments,
    ),
]
