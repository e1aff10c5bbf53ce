"""The audit trail's costs: appending a record to a SQLite file, and verifying a chain of
100,000 records, against the floor of computing the same 100,000 SHA-256 hashes of the same
canonical JSON with no database at all.

    python benchmarks/audit_bench.py [--appends 2000] [--records 100000] [--dir /tmp/x]

Appends go through :meth:`AuditTrail.append` (one transaction each, ``BEGIN IMMEDIATE``, the
file synced on commit); the long chain is written in bulk with the same hashes, since how it
was written does not change what ``verify`` reads.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from plumbline.governance.identity import Actor, iso, now_utc
from plumbline.governance.trail import GENESIS, AuditTrail, canonical, record_hash, records_table

ACTOR = Actor("alice", "approver", "token")


def subject(i: int) -> dict[str, Any]:
    return {"model": "plumbline-classifier", "version": str(i), "alias": "champion", "from": "1"}


def evidence(i: int) -> dict[str, Any]:
    """A promotion's typical evidence: three file hashes and a few statistics."""
    return {
        "gate_json_sha256": hashlib.sha256(f"gate{i}".encode()).hexdigest(),
        "model_card_sha256": hashlib.sha256(f"card{i}".encode()).hexdigest(),
        "dvc_lock": {
            "data": hashlib.md5(f"d{i}".encode()).hexdigest(),
            "model": hashlib.md5(f"m{i}".encode()).hexdigest(),
        },
        "statistics": {"roc_auc": 0.79 + i % 7 / 1000, "pr_auc": 0.45, "brier": 0.08},
    }


def chain(n: int) -> list[dict[str, Any]]:
    """``n`` records' fields (without ``hash``), each linked to the one before."""
    out: list[dict[str, Any]] = []
    prev = GENESIS
    start = now_utc()
    for i in range(1, n + 1):
        fields = {
            "seq": i,
            "at": iso(start),
            "actor": ACTOR.name,
            "via": ACTOR.via,
            "action": "promote",
            "subject": subject(i),
            "evidence": evidence(i),
            "comment": f"promotion {i}",
            "prev_hash": prev,
        }
        prev = record_hash(fields)
        out.append({**fields, "hash": prev})
    return out


def bench_appends(folder: Path, n: int) -> list[float]:
    trail = AuditTrail(f"sqlite:///{folder / 'appends.sqlite'}")
    trail.append("reload", ACTOR)  # the first connection and table checks, not timed
    times: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        trail.append("promote", ACTOR, subject(i), evidence(i), "benchmark")
        times.append(time.perf_counter() - started)
    assert trail.verify().ok
    trail.close()
    return times


def bench_fsync_floor(folder: Path, n: int) -> list[float]:
    """The append's floor: writing one record's worth of bytes to a file and syncing it to
    the disk, as every committed append must."""
    payload = canonical({"subject": subject(0), "evidence": evidence(0)}).encode("utf-8")
    times: list[float] = []
    with (folder / "floor.bin").open("ab", buffering=0) as out:
        for _ in range(n):
            started = time.perf_counter()
            out.write(payload)
            os.fsync(out.fileno())
            times.append(time.perf_counter() - started)
    return times


def floor(records: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds to hash every record's canonical JSON from memory: (SHA-256 of the JSON text
    alone, writing the canonical JSON and hashing it)."""
    texts = [
        canonical({k: v for k, v in fields.items() if k != "hash"}).encode("utf-8")
        for fields in records
    ]
    started = time.perf_counter()
    for text in texts:
        hashlib.sha256(text).hexdigest()
    hashing = time.perf_counter() - started
    started = time.perf_counter()
    for fields in records:
        body = {k: v for k, v in fields.items() if k != "hash"}
        hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()
    return hashing, time.perf_counter() - started


def bench_verify(folder: Path, records: list[dict[str, Any]]) -> float:
    trail = AuditTrail(f"sqlite:///{folder / 'chain.sqlite'}")
    rows = [
        {**r, "subject": canonical(r["subject"]), "evidence": canonical(r["evidence"])}
        for r in records
    ]
    with trail.engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(sa.insert(records_table), rows[start : start + 10_000])
    trail.verify()  # warm the file cache: verify reads a database already on this machine
    started = time.perf_counter()
    result = trail.verify()
    took = time.perf_counter() - started
    assert result.ok and result.checked == len(records), result
    trail.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite files go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        # Interleaved halves, so that a noisy neighbour weighs on both alike.
        half = args.appends // 2
        times = bench_appends(folder, half)
        synced = bench_fsync_floor(folder, half)
        times = sorted(times + bench_appends(folder, args.appends - half))
        synced = sorted(synced + bench_fsync_floor(folder, args.appends - half))
        median, sync_median = statistics.median(times), statistics.median(synced)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"append ({args.appends} records, SQLite file, one transaction each):")
        print(f"  median {median * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms, {1 / median:,.0f} per s")
        print(
            f"  floor: write + fsync of a record's bytes, median {sync_median * 1e3:.3f} ms; "
            f"ratio append / floor {median / sync_median:.1f}"
        )

        records = chain(args.records)
        floors = [floor(records) for _ in range(3)]
        sha = min(f[0] for f in floors)
        json_sha = min(f[1] for f in floors)
        verify = bench_verify(folder, records)
        n = args.records
        print(f"verify ({n:,} records, SQLite file):")
        print(f"  verify               {verify:.3f} s  {n / verify:>10,.0f} records/s")
        print(f"  floor: SHA-256 only  {sha:.3f} s  {n / sha:>10,.0f} records/s  (of the canonical")
        print("         JSON text, from memory, no database)")
        print(
            f"  JSON + SHA-256       {json_sha:.3f} s  {n / json_sha:>10,.0f} records/s  (writing"
        )
        print("         that text from the records' fields, then hashing it)")
        print(f"  ratio verify / SHA-256 floor      {verify / sha:.1f}")
        print(f"  ratio verify / JSON + SHA-256     {verify / json_sha:.2f}")


if __name__ == "__main__":
    main()
