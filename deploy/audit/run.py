"""``make audit``: pip-audit of requirements.lock, failing on any known vulnerability that
deploy/audit/ignore.txt does not accept with a reason.

The pinned lock is audited as it is (``--no-deps``: every dependency is in it), against the OSV
database. ``--if-reachable`` turns "the database cannot be reached" from a failure into a loud
notice and exit 0, for build hosts that reach only package registries; an audit that found
something always fails.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IGNORE_FILE = Path(__file__).with_name("ignore.txt")
SERVICE_HOST = "api.osv.dev"
ENTRY = re.compile(r"^(?P<id>[A-Za-z0-9][A-Za-z0-9._:-]+)\s+(?P<reason>\S.*)$")


def ignored(path: Path = IGNORE_FILE) -> dict[str, str]:
    """Vulnerability id -> reason; a line without a reason is an error naming the line."""
    found: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = ENTRY.match(line)
        if match is None:
            raise SystemExit(f"{path}:{number}: '<id>  <reason>' expected, got {line!r}")
        found[match["id"]] = match["reason"]
    return found


def reachable(host: str = SERVICE_HOST, port: int = 443, timeout_s: float = 10) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--if-reachable",
        action="store_true",
        help="exit 0 with a notice when the vulnerability database cannot be reached",
    )
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.lock")
    args = parser.parse_args(argv)
    accepted = ignored()
    if not reachable():
        notice = (
            f"pip-audit: {SERVICE_HOST} cannot be reached from this machine, so "
            f"{args.requirements.name} was NOT audited"
        )
        print(notice, file=sys.stderr)
        return 0 if args.if_reachable else 2
    tool = shutil.which("pip-audit", path=str(Path(sys.executable).parent)) or "pip-audit"
    command = [
        tool,
        "--requirement",
        str(args.requirements),
        "--no-deps",
        "--disable-pip",
        # A pin the service cannot look up fails the audit instead of being skipped with
        # "No known vulnerabilities found".
        "--strict",
        "--vulnerability-service",
        "osv",
        "--progress-spinner",
        "off",
        "--desc",
        "on",
    ]
    for vulnerability, reason in accepted.items():
        print(f"accepted: {vulnerability} ({reason})")
        command += ["--ignore-vuln", vulnerability]
    return subprocess.run(command, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
