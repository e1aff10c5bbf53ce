"""The closed loop on the real data: now ``make demo`` (``plumbline demo``).

Kept as an entry point for the earlier benchmark's users: the same run, on the shipped
defaults (no lowered gate), written to ``--out`` (default reports/loop).

Usage: python benchmarks/replay_loop.py [--out DIR] [--set replay.rate=40] [--keep]
"""

from __future__ import annotations

import sys

from plumbline.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main(["demo", *sys.argv[1:]]))
