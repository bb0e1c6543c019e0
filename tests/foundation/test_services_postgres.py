"""Issue 16 §4: ``make test`` works wherever a user clones, including a directory the ``postgres`` user
cannot traverse (a root home is mode 700 on Debian, and so is every ``mktemp -d``).

The test copies ``infra/services.py`` into a mode-700 "clone", starts *only* PostgreSQL from there on a port of
its own (the shared servers are never touched), talks to it, and stops it: the cluster must live in a private
directory under the system temp dir, owned by ``postgres`` when run as root, and be gone after ``stop``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
                    reason="PostgreSQL's initdb is not installed (make test installs it)")
def test_postgres_starts_and_stops_from_a_clone_postgres_cannot_traverse():
    clone = Path(tempfile.mkdtemp(prefix="distkit-clone-"))  # mode 700, like a root home directory
    try:
        assert stat.S_IMODE(clone.stat().st_mode) == 0o700
        (clone / "infra").mkdir()
        shutil.copy(ROOT / "infra" / "services.py", clone / "infra" / "services.py")
        state = clone / ".services"
        state.mkdir()
        port = _free_port()
        (state / "ports.json").write_text(json.dumps({"postgres": port}))  # a port of its own, not the shared one
        env = {k: v for k, v in os.environ.items() if k != "DISTKIT_SERVICES_DIR"}
        script = [sys.executable, str(clone / "infra" / "services.py")]

        def services(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*script, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=180)

        try:
            started = services("start", "postgres")
            assert started.returncode == 0, started.stderr
            home = Path((state / "pg-dir").read_text().strip())
            assert home.parent == Path(tempfile.gettempdir()) or str(home).startswith(("/tmp/", "/var/tmp/"))
            assert home.name.startswith("distkit-pg-") and not home.is_relative_to(clone)
            assert stat.S_IMODE(home.stat().st_mode) == 0o700
            if os.geteuid() == 0:
                assert home.owner() == "postgres" and (home / "data").owner() == "postgres"
            url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/distkit_test"
            assert f"export DISTKIT_DATABASE_URL={url}" in (state / "env").read_text()

            from sqlalchemy import create_engine, text

            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT current_setting('data_directory')")).scalar_one() == str(
                        home / "data"
                    )
            finally:
                engine.dispose()
            again = services("start", "postgres")  # idempotent
            assert again.returncode == 0 and "already up" in again.stderr
        finally:
            stopped = services("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not _port_open(port)
        assert not home.exists() and not (state / "pg-dir").exists()
    finally:
        shutil.rmtree(clone, ignore_errors=True)
