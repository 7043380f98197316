"""A real PostgreSQL for tests: the server bundled by the ``pgserver`` package (PostgreSQL 16), in a temporary
directory, listening on a loopback port; or the one at ``$APHRODITE_TEST_POSTGRES_URL`` when that is set.

PostgreSQL refuses to run as root. As root (CI here) the server runs as the system user ``pgserver``, created
with ``useradd`` if absent, the way ``pgserver`` itself does it; its data directory is given to that user.
Each test gets its own schema (``fresh_url``), so tests share one server without seeing each other's rows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

from tests.server_process import free_port

URL_ENV = "APHRODITE_TEST_POSTGRES_URL"
_USER = "pgserver"


class TestPostgres:
    """One PostgreSQL server; ``stop``/``start`` restart it on the same port (for outage tests)."""

    __test__ = False  # not a test class, despite its name

    def __init__(self) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.root = Path(tempfile.mkdtemp(prefix="aphrodite-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
            import stat

            ensure_user_exists(_USER)
            self._user = _USER
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            shutil.chown(self.root, _USER, _USER)
            self.root.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=utf8",
                  "--no-sync")
        self.start()

    def _run(self, exe: str, *args: str, timeout: float = 60) -> None:
        subprocess.run([str(self.bin / exe), *args], check=True, timeout=timeout, user=self._user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.root)

    def start(self) -> None:
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200 "
                "-c shared_buffers=16MB")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-o", opts, "-l", str(self.root / "log"), "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def fresh_url(base: str) -> str:
    """``base`` with a new, empty schema first on the search path (created here)."""
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
