"""A throwaway PostgreSQL server (Debian's ``postgresql`` package) for the tests of the
governance database on PostgreSQL: its own data directory and port, trust authentication on
127.0.0.1 only, stopped and deleted afterwards."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support.net import free_port


def postgres_bin() -> Path | None:
    """The directory of initdb and postgres: on PATH, else Debian's versioned directory."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@dataclass(frozen=True)
class Server:
    port: int

    def url(self, user: str, database: str) -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def sql(self, *statements: str, database: str = "postgres", user: str = "postgres") -> None:
        """Run statements as ``user``, each in autocommit (CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=user, dbname=database, autocommit=True
        ) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]


@contextmanager
def postgres_server() -> Iterator[Server]:
    """A running server; the superuser is ``postgres``. PostgreSQL refuses to run as root, so
    as root it runs as the package's ``postgres`` user, in a directory that user owns."""
    bindir = postgres_bin()
    assert bindir is not None, "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    base = Path(tempfile.mkdtemp(prefix="plumbline-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(base, account.pw_uid, account.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
        text=True,
    )
    log = (base / "server.log").open("w")
    server = subprocess.Popen(
        [
            *prefix,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(base),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",  # a throwaway server: durability is not under test
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(Server(port), server, base / "server.log")
        yield Server(port)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(server: Server, process: subprocess.Popen[bytes], log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            server.sql("SELECT 1")
            return
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not start:\n{log.read_text()}") from None
            time.sleep(0.1)
