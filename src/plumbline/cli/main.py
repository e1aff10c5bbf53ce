"""The ``plumbline`` command: a table of subcommands, one module per group.

Each group module (pipeline, promotion, explain, serving, monitoring, rollout,
params_reference) lists its
:class:`~plumbline.cli.context.Command` rows; this module builds the parser from them and runs
the chosen one. Errors that a user can fix (bad config, unreadable source, too many bad rows)
print one clear message and exit with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from plumbline.cli import (
    explain,
    governance,
    monitoring,
    params_reference,
    pipeline,
    promotion,
    rollout,
    serving,
)
from plumbline.cli.context import Command, Context
from plumbline.core.errors import PlumblineError
from plumbline.core.timing import spent

log = logging.getLogger("plumbline")

# In the order of the data flow; `plumbline --help` lists them so.
GROUPS = (
    pipeline,
    promotion,
    explain,
    serving,
    monitoring,
    rollout,
    governance,
    params_reference,
)
COMMANDS: dict[str, Command] = {c.name: c for group in GROUPS for c in group.COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plumbline",
        description="Plumbline: from raw tabular data to a monitored prediction service.",
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params file (default: params.yaml at the project root)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        if command.arguments is not None:
            command.arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("great_expectations", "mlflow", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    command = COMMANDS[args.command]
    started = time.perf_counter()
    try:
        summary = command.run(Context(args.params), args)
    except PlumblineError as err:
        print(f"plumbline {args.command}: error: {err}", file=sys.stderr)
        return 1
    took = f"{time.perf_counter() - started:.1f}s"
    phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in spent().items())
    # Machine-readable output (--json) keeps stdout for the document alone.
    out = sys.stderr if getattr(args, "json", False) else sys.stdout
    print(
        f"plumbline {args.command}: {summary} ({took}{'; ' + phases if phases else ''})",
        file=out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
