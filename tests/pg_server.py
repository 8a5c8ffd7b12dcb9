"""A real PostgreSQL server for the catalog tests: Debian's postgresql 15, started once per session.

`initdb` refuses to run as root, so under root the server runs as the `postgres` user
(`runuser`); its data and socket live in a fresh folder under /tmp (pytest's own tmp folders are
private to root). It listens on a Unix socket only: nothing is reachable from outside. Each test
gets its own database; the `photo` role logs in with a password (scram), the superuser over
trust, so the tests can show that a recorded catalog URL never carries the password.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "s3cret-pw"  # the `photo` role's; a recorded URL must never contain it
USER = "photo"


@dataclass(frozen=True)
class PgServer:
    """A running server: its socket folder, and URLs to fresh databases on it."""

    socket_dir: Path

    def url(self, database: str, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql+psycopg://{USER}{secret}@/{database}?host={self.socket_dir}"

    def admin(self, sql: str, database: str = "postgres") -> None:
        """Run `sql` as the superuser (over trust on the socket)."""
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), user="postgres", dbname=database,
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(sql.encode())

    def new_database(self) -> str:
        name = "cat_" + uuid.uuid4().hex[:12]
        self.admin(f'CREATE DATABASE "{name}" OWNER {USER}')
        return name


def _as_postgres(*command: str) -> list[str]:
    if os.geteuid() != 0:
        return list(command)
    return ["runuser", "-u", "postgres", "--", *command]


def _run(*command: str) -> None:
    subprocess.run(_as_postgres(*command), check=True, capture_output=True)


def start_server() -> Iterator[PgServer]:
    initdb, pg_ctl = BIN / "initdb", BIN / "pg_ctl"
    if not initdb.exists() or not pg_ctl.exists():
        pytest.skip(f"PostgreSQL 15 binaries not found in {BIN} (apt-get install postgresql-15)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb cannot run as root")
    base = Path(tempfile.mkdtemp(prefix="photoseek-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    hba = base / "hba.conf"
    hba.write_text("local all postgres trust\nlocal all all scram-sha-256\n")
    try:
        _run(str(initdb), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync")  # fmt: skip
        options = (f"-c listen_addresses='' -c unix_socket_directories={sock} "
                   f"-c hba_file={hba} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=60")  # fmt: skip
        _run(str(pg_ctl), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start")
        server = PgServer(sock)
        server.admin(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        yield server
    finally:
        subprocess.run(_as_postgres(str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"),
                       capture_output=True)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (skipped, with the reason, without the binaries)."""
    yield from start_server()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A URL (with the password) to a fresh, empty database owned by the `photo` role."""
    return pg_server.url(pg_server.new_database())
