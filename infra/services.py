#!/usr/bin/env python3
"""Start, stop and describe the real servers distkit's tests run against.

No Docker here: Redis comes from Debian's ``redis-server``, PostgreSQL from the installed
``initdb``/``pg_ctl``, and Kafka is a single-node KRaft broker built from Apache Kafka's own
jars, resolved by Maven from Maven Central (``infra/kafka/pom.xml``).

    python infra/services.py start [redis|cluster|postgres|kafka ...]   # idempotent
    python infra/services.py stop                                       # stops what it started
    python infra/services.py stop kafka                                 # only Kafka; `start kafka` restarts
                                                                        # it with its data (topics, offsets)
    python infra/services.py env                                        # prints DISTKIT_* exports
    python infra/services.py status

State (data dirs, pid files, logs, the ``env`` file) lives in ``$DISTKIT_SERVICES_DIR``
(default ``<repo>/.services``). Only the standard library is used, so this runs before the
venv exists.
"""

from __future__ import annotations

# The logic ships in the package (distkit.testing.services, standard library only) so users' test suites can
# start the same servers; this file is its command line for the checkout. The checkout's own package comes first,
# so a bare ``python3 infra/services.py`` works before any venv exists.
import os
import shutil  # noqa: F401  (tests monkeypatch ``services.shutil.which``)
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if (ROOT / "distkit" / "testing" / "services.py").exists():
    sys.path.insert(0, str(ROOT))

from distkit.testing import services as _core  # noqa: E402
from distkit.testing.services import (  # noqa: E402, F401  (the names tests and scripts use from this module)
    ALL,
    KAFKA_START_TIMEOUT_S,
    SetupError,
    apt_install,
    free_cluster_ports,
    free_port,
    kafka_properties,
    port_free,
    port_open,
    tail,
    wait_for,
)

STATE = Path(os.environ.get("DISTKIT_SERVICES_DIR", ROOT / ".services")).resolve()
KAFKA_DIR = ROOT / "infra" / "kafka"


def _kafka_libs() -> Path:
    """``$DISTKIT_KAFKA_LIBS``, else ``infra/kafka/libs`` of this checkout, else (in a ``git worktree``) the
    main checkout's already-resolved jars, else this checkout's (resolved there on first start)."""
    if os.environ.get("DISTKIT_KAFKA_LIBS"):
        return Path(os.environ["DISTKIT_KAFKA_LIBS"])
    own = KAFKA_DIR / "libs"
    if any(own.glob("kafka_2.13-*.jar")):
        return own
    try:  # a worktree's .git is a file "gitdir: <main>/.git/worktrees/<name>" with a "commondir" inside
        gitdir = Path((ROOT / ".git").read_text().split("gitdir:", 1)[1].strip())
        common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        main_libs = common.parent / "infra" / "kafka" / "libs"
        if any(main_libs.glob("kafka_2.13-*.jar")):
            return main_libs
    except (OSError, IndexError):
        pass
    return own


KAFKA_LIBS = _kafka_libs()


def local_services() -> _core.LocalServices:
    """This checkout's servers (read at call time: tests monkeypatch ``STATE`` / ``KAFKA_LIBS``)."""
    return _core.LocalServices(STATE, kafka_dir=KAFKA_DIR, kafka_libs=KAFKA_LIBS,
                               pythons=[ROOT / ".venv" / "bin" / "python", sys.executable])


def ensure_kafka_libs() -> None:
    local_services().ensure_kafka_libs()


def format_kafka_storage(props: Path, cluster_id: str) -> None:
    local_services().format_kafka_storage(props, cluster_id)


def start_kafka_node(d: Path, port: int, cport: int, *, timeout_s: float = KAFKA_START_TIMEOUT_S) -> int:
    return local_services().start_kafka_node(d, port, cport, timeout_s=timeout_s)


def stop_kafka_node(d: Path, timeout_s: float = 30.0) -> None:
    local_services().stop_kafka_node(d, timeout_s=timeout_s)


def main(argv: list[str]) -> int:
    return _core.main(argv, local_services(), usage=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
