"""The closed loop on the real data: now ``make demo`` (:mod:`plumbline.monitoring.demo`).

Kept as an entry point for the earlier benchmark's users: the same run, on the shipped
defaults (no lowered gate), written to ``--out`` (default reports/loop).

Usage: python benchmarks/replay_loop.py [--out DIR] [--set replay.rate=40] [--keep]
"""

from __future__ import annotations

from plumbline.monitoring.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
