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

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
ALL = ("redis", "cluster", "postgres", "kafka")
KAFKA_START_TIMEOUT_S = 90


class SetupError(RuntimeError):
    """A service could not be set up; the message says what to do."""


# --------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[services] {msg}", file=sys.stderr, flush=True)


def free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there, else a free port picked by the kernel."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                log(f"port {preferred} is in use; picking another")
                continue
            return int(s.getsockname()[1])
    raise SetupError("no free loopback port")


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_ports(first: int, count: int) -> list[int]:
    """Ports for cluster nodes: Redis also listens on port + 10000 (the cluster bus), so both must be free
    and the node port must be <= 55535."""
    ports: list[int] = []
    candidate = first
    while len(ports) < count and candidate <= 55535:
        if port_free(candidate) and port_free(candidate + 10000):
            ports.append(candidate)
        candidate += 1
    if len(ports) < count:
        raise SetupError(f"no {count} free port pairs (p, p+10000) between {first} and 55535 for the Redis Cluster")
    if ports != list(range(first, first + count)):
        log(f"cluster ports {first}..{first + count - 1} (or their +10000 bus ports) are in use; using {ports}")
    return ports


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(pred, timeout_s: float, what: str, log_file: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise SetupError(f"{what} did not come up within {timeout_s:.0f} s" + tail(log_file))


def tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last {len(text)} lines of {path} ---\n" + "\n".join(text)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(*packages: str) -> None:
    if not is_root() or shutil.which("apt-get") is None:
        raise SetupError(
            f"missing {' '.join(packages)}: install it with `sudo apt-get install -y {' '.join(packages)}`"
        )
    log(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
    res = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise SetupError(f"apt-get install {' '.join(packages)} failed:\n{res.stderr[-2000:]}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0); treat it as gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def kill_pid(pid: int, name: str, timeout_s: float = 20.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        log(f"{name} (pid {pid}) ignored SIGTERM; killing")
        os.kill(pid, signal.SIGKILL)


def load_ports() -> dict[str, object]:
    f = STATE / "ports.json"
    return json.loads(f.read_text()) if f.exists() else {}


def save_ports(ports: dict[str, object]) -> None:
    (STATE / "ports.json").write_text(json.dumps(ports, indent=2))


# --------------------------------------------------------------------------- redis


def redis_bin() -> str:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        apt_install("redis-server", "redis-tools")
    return shutil.which("redis-server") or "redis-server"


def start_redis_node(name: str, port: int, *extra: str) -> None:
    d = STATE / name
    d.mkdir(parents=True, exist_ok=True)
    pidfile = d / "redis.pid"
    if read_pid(pidfile) and port_open(port):
        return
    cmd = [
        redis_bin(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
        "--daemonize", "yes", "--pidfile", str(pidfile), "--logfile", str(d / "redis.log"),
        "--save", "", "--appendonly", "no", "--protected-mode", "no", *extra,
    ]
    run(cmd)
    wait_for(lambda: port_open(port), 10, f"redis {name} on port {port}", d / "redis.log")


def start_redis(ports: dict[str, object]) -> None:
    port = int(ports.get("redis") or free_port(6390))  # type: ignore[call-overload]
    ports["redis"] = port
    start_redis_node("redis", port)
    log(f"redis up on 127.0.0.1:{port}")


def cluster_ok(port: int) -> bool:
    try:
        out = run(["redis-cli", "-p", str(port), "cluster", "info"]).stdout
    except subprocess.CalledProcessError:
        return False
    return "cluster_state:ok" in out


def start_cluster(ports: dict[str, object]) -> None:
    nodes = ports.get("cluster") or free_cluster_ports(7390, 3)
    nodes = [int(p) for p in nodes]  # type: ignore[union-attr]
    ports["cluster"] = nodes
    fresh = False
    for i, p in enumerate(nodes):
        d = STATE / f"cluster-{i}"
        if not read_pid(d / "redis.pid"):
            shutil.rmtree(d, ignore_errors=True)
            fresh = True
        start_redis_node(f"cluster-{i}", p, "--cluster-enabled", "yes",
                         "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
    if fresh or not cluster_ok(nodes[0]):
        run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in nodes],
             "--cluster-replicas", "0", "--cluster-yes"])
    wait_for(lambda: all(cluster_ok(p) for p in nodes), 30, "redis cluster",
             STATE / "cluster-0" / "redis.log")
    log(f"redis cluster up on ports {nodes}")


def stop_redis_nodes() -> None:
    for d in sorted(STATE.glob("redis")) + sorted(STATE.glob("cluster-*")):
        pid = read_pid(d / "redis.pid")
        if pid:
            kill_pid(pid, f"redis {d.name}")


# --------------------------------------------------------------------------- postgres


def pg_bindir() -> Path:
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists():
            return cand
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    apt_install("postgresql-15")
    return pg_bindir()


def as_pg_user(cmd: list[str]) -> list[str]:
    """initdb/postgres refuse to run as root; drop to the ``postgres`` user then."""
    if not is_root():
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


def pg_dir_record() -> Path:
    """The file in STATE that names this checkout's PostgreSQL directory (see :func:`pg_home`)."""
    return STATE / "pg-dir"


def world_searchable(path: Path) -> bool:
    """Whether any user (``postgres``) can reach ``path``: every directory above it has o+x."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents] if p.exists())


def pg_home() -> Path:
    """This checkout's PostgreSQL directory: ``data/``, ``sock/`` and ``postgres.log``.

    It lives under the system temp dir, not in the checkout: a clone in a directory the ``postgres`` user cannot
    traverse (a mode-700 home, ``mktemp -d``) must still work. Made with ``mkdtemp`` (mode 700, a random name,
    so no other user can pre-create or redirect it), owned by ``postgres`` when run as root, recorded in
    ``STATE/pg-dir`` and removed by :func:`stop_postgres`.
    """
    import tempfile

    recorded = pg_dir_record()
    if recorded.exists():
        home = Path(recorded.read_text().strip())
        if home.is_dir() and home.name.startswith("distkit-pg-"):
            return home
    parents = [Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")]
    parent = next((p for p in parents if p.is_dir() and world_searchable(p)), None)
    if parent is None:
        raise SetupError(f"no temp dir the postgres user can reach among {[str(p) for p in parents]}; set TMPDIR")
    home = Path(tempfile.mkdtemp(prefix="distkit-pg-", dir=parent))
    STATE.mkdir(parents=True, exist_ok=True)
    recorded.write_text(f"{home}\n")
    return home


def start_postgres(ports: dict[str, object]) -> None:
    bindir = pg_bindir()
    home = pg_home()
    data, sock, logf = home / "data", home / "sock", home / "postgres.log"
    port = int(ports.get("postgres") or free_port(5440))  # type: ignore[call-overload]
    ports["postgres"] = port
    if read_pid_pg(data) and port_open(port):
        log(f"postgres already up on 127.0.0.1:{port}")
        return
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)
        data.mkdir(mode=0o700)
        sock.mkdir(mode=0o700)
        logf.touch()
        if is_root():
            for p in (home, data, sock, logf):
                shutil.chown(p, "postgres", "postgres")
        run(as_pg_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync"]))
    opts = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    res = subprocess.run(as_pg_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logf),
                                     "-o", opts, "-w", "-t", "60", "start"]),
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SetupError(f"postgres failed to start: {res.stderr.strip()}" + tail(logf))
    exists = subprocess.run([str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                             "-tAc", "SELECT 1 FROM pg_database WHERE datname='distkit_test'"],
                            capture_output=True, text=True).stdout.strip()
    if exists != "1":
        run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "distkit_test"])
    log(f"postgres up on 127.0.0.1:{port} (database distkit_test, cluster in {home})")


def read_pid_pg(data: Path) -> int | None:
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def stop_postgres_cluster(data: Path) -> None:
    if read_pid_pg(data) is None:
        return
    subprocess.run(as_pg_user([str(pg_bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                   capture_output=True)
    pid = read_pid_pg(data)
    if pid:
        kill_pid(pid, "postgres")


def stop_postgres() -> None:
    """Stop this checkout's cluster and remove its directory (also stops one in the old ``STATE/pg`` place)."""
    stop_postgres_cluster(STATE / "pg" / "data")
    recorded = pg_dir_record()
    if not recorded.exists():
        return
    home = Path(recorded.read_text().strip())
    if home.name.startswith("distkit-pg-"):  # never remove anything but a directory pg_home() made
        stop_postgres_cluster(home / "data")
        shutil.rmtree(home, ignore_errors=True)
    recorded.unlink(missing_ok=True)


# --------------------------------------------------------------------------- kafka


def ensure_kafka_libs() -> None:
    if KAFKA_LIBS.is_dir() and any(KAFKA_LIBS.glob("kafka_2.13-*.jar")) and any(KAFKA_LIBS.glob("slf4j-api-*.jar")):
        return
    if shutil.which("java") is None:
        raise SetupError("java not found: Kafka needs Java 17 (`apt-get install -y openjdk-17-jre-headless`)")
    if shutil.which("mvn") is None:
        apt_install("maven")
    log("resolving Kafka jars from Maven Central (infra/kafka/pom.xml)")
    tmp = KAFKA_LIBS.with_name(KAFKA_LIBS.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    res = subprocess.run(["mvn", "-q", "-B", "-f", str(KAFKA_DIR / "pom.xml"), "dependency:copy-dependencies",
                          f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SetupError("mvn could not resolve Kafka:\n" + (res.stdout + res.stderr)[-3000:])
    shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
    tmp.rename(KAFKA_LIBS)


def kafka_java() -> list[str]:
    if shutil.which("java") is None:
        raise SetupError("java not found: Kafka needs Java 17 (`apt-get install -y openjdk-17-jre-headless`)")
    return ["java", "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
            "-cp", f"{KAFKA_LIBS}/*"]


def kafka_properties(port: int, cport: int, logdir: Path) -> str:
    return f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={logdir}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.flush.interval.messages=9223372036854775807
log.retention.hours=2
transaction.abort.timed.out.transaction.cleanup.interval.ms=5000
transaction.remove.expired.transaction.cleanup.interval.ms=60000
group.consumer.heartbeat.interval.ms=1000
group.consumer.session.timeout.ms=10000
group.consumer.min.session.timeout.ms=1000
group.consumer.min.heartbeat.interval.ms=500
"""


def kafka_ready(port: int) -> bool:
    """A client can create (or see) a topic: the broker is really serving, not just listening."""
    if not port_open(port):
        return False
    probe = [str(ROOT / ".venv" / "bin" / "python"), sys.executable]
    code = (
        "import sys\n"
        "from confluent_kafka.admin import AdminClient, NewTopic\n"
        f"a=AdminClient({{'bootstrap.servers':'127.0.0.1:{port}'}})\n"
        "f=a.create_topics([NewTopic('distkit-ready',1,1)],operation_timeout=5)\n"
        "try: f['distkit-ready'].result(timeout=8)\n"
        "except Exception as e:\n"
        "    if 'TOPIC_ALREADY_EXISTS' not in str(e): raise\n"
    )
    for py in probe:
        if not Path(py).exists():
            continue
        chk = subprocess.run([py, "-c", "import confluent_kafka"], capture_output=True)
        if chk.returncode != 0:
            continue
        return subprocess.run([py, "-c", code], capture_output=True, timeout=20).returncode == 0
    return True  # no client installed yet: an open port is the best we can check


def format_kafka_storage(props: Path, cluster_id: str) -> None:
    """``kafka-storage format``. The id goes as ``--cluster-id=<id>``: a urlsafe-base64 id starts with "-" one
    time in 64, and argparse would take ``-t -xyz`` for a missing value."""
    fmt = subprocess.run([*kafka_java(), "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                          "-c", str(props)], capture_output=True, text=True)
    if fmt.returncode != 0:
        raise SetupError("kafka storage format failed:\n" + (fmt.stdout + fmt.stderr)[-3000:])


def start_kafka_node(d: Path, port: int, cport: int, *, timeout_s: float = KAFKA_START_TIMEOUT_S) -> int:
    """Start a single-node KRaft broker with its state in ``d``; returns its pid.

    The data in ``d`` is kept if it was formatted for the same ports (a restart: topics, committed offsets
    and transaction state survive); otherwise ``d`` is wiped and formatted afresh."""
    ensure_kafka_libs()
    pidfile, logf, props = d / "kafka.pid", d / "kafka.log", d / "server.properties"
    wanted = kafka_properties(port, cport, d / "data")
    reuse = (d / "data" / "meta.properties").exists() and props.exists() and props.read_text() == wanted
    if not reuse:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        props.write_text(wanted)
        format_kafka_storage(props, base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    t0 = time.monotonic()
    with open(logf, "a") as out:
        proc = subprocess.Popen([*kafka_java(), "kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    pidfile.write_text(str(proc.pid))

    def up() -> bool:
        if proc.poll() is not None:
            raise SetupError(f"kafka exited with code {proc.returncode}" + tail(logf))
        return kafka_ready(port)

    wait_for(up, timeout_s, f"kafka on port {port}", logf)
    log(f"kafka up on 127.0.0.1:{port} in {time.monotonic() - t0:.1f} s ({'data kept' if reuse else 'fresh'})")
    return proc.pid


def stop_kafka_node(d: Path, timeout_s: float = 30.0) -> None:
    """Stop the broker whose state is in ``d`` (SIGTERM: a clean shutdown; its data stays for a restart)."""
    pid = read_pid(d / "kafka.pid")
    if pid:
        kill_pid(pid, "kafka", timeout_s=timeout_s)


def start_kafka(ports: dict[str, object]) -> None:
    d = STATE / "kafka"
    port = int(ports.get("kafka") or free_port(9392))  # type: ignore[call-overload]
    cport = int(ports.get("kafka_controller") or free_port(9393))  # type: ignore[call-overload]
    if cport == port:
        cport = free_port(0)
    ports["kafka"], ports["kafka_controller"] = port, cport
    if read_pid(d / "kafka.pid") and port_open(port):
        log(f"kafka already up on 127.0.0.1:{port}")
        return
    start_kafka_node(d, port, cport)


def stop_kafka() -> None:
    stop_kafka_node(STATE / "kafka")


# --------------------------------------------------------------------------- commands


def env_lines(ports: dict[str, object]) -> list[str]:
    out = []
    if "redis" in ports:
        out.append(f"DISTKIT_REDIS_URL=redis://127.0.0.1:{ports['redis']}/0")
    if "cluster" in ports:
        out.append("DISTKIT_REDIS_CLUSTER_NODES=" + ",".join(f"127.0.0.1:{p}" for p in ports["cluster"]))  # type: ignore[attr-defined]
    if "postgres" in ports:
        out.append(f"DISTKIT_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:{ports['postgres']}/distkit_test")
    if "kafka" in ports:
        out.append(f"DISTKIT_KAFKA_BOOTSTRAP=127.0.0.1:{ports['kafka']}")
    return out


def write_env(ports: dict[str, object]) -> None:
    (STATE / "env").write_text("".join(f"export {line}\n" for line in env_lines(ports)))


def cmd_start(which: list[str]) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    ports = load_ports()
    starters = {"redis": start_redis, "cluster": start_cluster, "postgres": start_postgres, "kafka": start_kafka}
    for name in which:
        starters[name](ports)
        save_ports(ports)
        write_env(ports)
    print(f"# services up; load them with:  set -a; . {STATE / 'env'}; set +a")
    for line in env_lines(ports):
        print(f"export {line}")


def cmd_stop() -> None:
    if not STATE.exists():
        return
    stop_kafka()
    stop_postgres()
    stop_redis_nodes()
    for f in ("ports.json", "env"):
        (STATE / f).unlink(missing_ok=True)
    log("all services stopped")


def cmd_status() -> None:
    ports = load_ports()
    checks = {
        "redis": lambda: port_open(int(ports["redis"])),  # type: ignore[call-overload]
        "cluster": lambda: all(cluster_ok(int(p)) for p in ports["cluster"]),  # type: ignore[attr-defined]
        "postgres": lambda: port_open(int(ports["postgres"])),  # type: ignore[call-overload]
        "kafka": lambda: port_open(int(ports["kafka"])),  # type: ignore[call-overload]
    }
    for name, check in checks.items():
        state = "up" if name in ports and check() else "down"
        print(f"{name:9} {state:5} {ports.get(name, '')}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"start", "stop", "env", "status"}:
        print(__doc__)
        return 2
    try:
        if argv[0] == "start":
            which = argv[1:] or list(ALL)
            unknown = set(which) - set(ALL)
            if unknown:
                raise SetupError(f"unknown service(s) {sorted(unknown)}; choose from {ALL}")
            cmd_start(which)
        elif argv[0] == "stop" and argv[1:] == ["kafka"]:
            stop_kafka()  # only Kafka, data kept: `start kafka` brings the same broker back
        elif argv[0] == "stop":
            cmd_stop()
        elif argv[0] == "env":
            for line in env_lines(load_ports()):
                print(f"export {line}")
        else:
            cmd_status()
    except (SetupError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else ""
        print(f"[services] ERROR: {exc}\n{detail or ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
