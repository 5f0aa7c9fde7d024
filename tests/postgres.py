"""A throw-away PostgreSQL cluster for the tests that run Dagster on PostgreSQL (dagster-postgres).

Debian's server binaries (installed by .ci/install-postgresql when missing) under
/usr/lib/postgresql/<version>/bin; initdb in a temporary directory, the server on a free port of
127.0.0.1, trust authentication (it only ever listens locally and dies with the session). As root
it runs as the `postgres` user: PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from export_core.settings import REPO_ROOT

INSTALL_SCRIPT = REPO_ROOT / ".ci" / "install-postgresql"


def server_bin() -> Path:
    """The newest installed server's bin directory; installs the package when none is there."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError(f"no PostgreSQL server binaries under /usr/lib/postgresql after {INSTALL_SCRIPT}")
    return Path(found[-1]).parent


class PostgresCluster:
    def __init__(self, port: int, superuser: str) -> None:
        self.port, self.superuser = port, superuser

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg2

        name = f"t_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(self.url())
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)


@contextmanager
def postgres_cluster(port: int) -> Iterator[PostgresCluster]:
    """initdb + start on `port`; stop and delete everything afterwards."""
    bin_dir = server_bin()
    root = Path(tempfile.mkdtemp(prefix="pg-test-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    user = "postgres"
    try:
        subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off -c max_connections=200"
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
        try:
            yield PostgresCluster(port, user)
        finally:
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                check=False, capture_output=True,
            )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace")
        if log.exists():
            detail += log.read_text(errors="replace")
        raise RuntimeError(f"could not start the test PostgreSQL cluster: {detail}") from exc
    finally:
        shutil.rmtree(root, ignore_errors=True)
