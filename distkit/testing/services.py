"""Local Redis, Redis Cluster, PostgreSQL and Kafka servers for tests, started from installed binaries (no Docker).

Redis comes from ``redis-server``, PostgreSQL from ``initdb``/``pg_ctl``, and Kafka is a single-node KRaft broker
run from Apache Kafka's own jars (resolved by Maven from Maven Central on first use, or taken from
``$DISTKIT_KAFKA_LIBS``). Everything a :class:`LocalServices` starts keeps its state (data dirs, pid files, logs,
``ports.json`` and a shell ``env`` file of ``DISTKIT_*`` exports) in one directory, so ``stop`` finds it again::

    python -m distkit.testing.services start [redis|cluster|postgres|kafka ...]   # idempotent
    python -m distkit.testing.services env                                        # DISTKIT_* exports
    python -m distkit.testing.services status
    python -m distkit.testing.services stop                                       # stops what it started

(state in ``$DISTKIT_SERVICES_DIR``, default ``./.distkit-services``). The pytest plugin
(:mod:`distkit.testing.plugin`) uses the same class as its last resort. Standard library only: distkit's own
``infra/services.py`` runs this before any virtualenv exists.
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
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distkit.errors import DistkitError

ALL = ("redis", "cluster", "postgres", "kafka")
KAFKA_START_TIMEOUT_S = 90

# What Maven resolves into the Kafka libs directory, and the broker's logging (used when no ``kafka_dir`` with
# its own pom.xml / log4j2.properties is given; distkit's checkout keeps identical copies in infra/kafka/).
KAFKA_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Resolves a single-node KRaft Kafka broker from Maven Central into ./libs (see infra/services.sh). -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.distkit.infra</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <properties>
    <kafka.version>4.3.1</kafka.version>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>${kafka.version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-storage</artifactId>
      <version>${kafka.version}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>2.0.17</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
"""

KAFKA_LOG4J = """# Kafka broker logging for the test broker: INFO to stdout (captured into .services/kafka/kafka.log).
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.org.name = org.apache.kafka
logger.org.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class SetupError(DistkitError, RuntimeError):
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


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str, log_file: Path | None = None) -> None:
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


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
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
        check=False,
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


def cluster_ok(port: int) -> bool:
    try:
        out = run(["redis-cli", "-p", str(port), "cluster", "info"]).stdout
    except subprocess.CalledProcessError:
        return False
    return "cluster_state:ok" in out


def redis_bin() -> str:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        apt_install("redis-server", "redis-tools")
    return shutil.which("redis-server") or "redis-server"


def find_pg_bindir() -> Path | None:
    """The directory of an installed ``initdb`` (newest Debian cluster version first), or None."""
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists():
            return cand
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def pg_bindir() -> Path:
    found = find_pg_bindir()
    if found is not None:
        return found
    apt_install("postgresql-15")
    return pg_bindir()


def as_pg_user(cmd: list[str]) -> list[str]:
    """initdb/postgres refuse to run as root; drop to the ``postgres`` user then."""
    if not is_root():
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


def world_searchable(path: Path) -> bool:
    """Whether any user (``postgres``) can reach ``path``: every directory above it has o+x."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents] if p.exists())


def read_pid_pg(data: Path) -> int | None:
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


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


def env_lines(ports: dict[str, Any]) -> list[str]:
    """``NAME=value`` for each service recorded in ``ports`` (the ``DISTKIT_*`` variables distkit reads)."""
    out = []
    if "redis" in ports:
        out.append(f"DISTKIT_REDIS_URL=redis://127.0.0.1:{ports['redis']}/0")
    if "cluster" in ports:
        out.append("DISTKIT_REDIS_CLUSTER_NODES=" + ",".join(f"127.0.0.1:{p}" for p in ports["cluster"]))
    if "postgres" in ports:
        out.append(f"DISTKIT_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:{ports['postgres']}/distkit_test")
    if "kafka" in ports:
        out.append(f"DISTKIT_KAFKA_BOOTSTRAP=127.0.0.1:{ports['kafka']}")
    return out


# --------------------------------------------------------------------------- the servers of one state directory


class LocalServices:
    """The servers whose state lives in ``state_dir``.

    ``kafka_dir`` holds ``pom.xml`` and ``log4j2.properties`` (default: the copies above, written into
    ``state_dir/kafka-conf``); ``kafka_libs`` the broker's jars (default ``$DISTKIT_KAFKA_LIBS``, else
    ``kafka_dir/libs``, else ``state_dir/kafka-libs``; resolved with Maven when empty). ``pythons`` are the
    interpreters tried, in order, for the Kafka readiness probe (one with confluent-kafka installed).
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        kafka_dir: Path | None = None,
        kafka_libs: Path | None = None,
        pythons: Sequence[Path | str] = (),
    ) -> None:
        self.state = Path(state_dir).resolve()
        self._kafka_dir = kafka_dir
        if kafka_libs is None:
            if os.environ.get("DISTKIT_KAFKA_LIBS"):
                kafka_libs = Path(os.environ["DISTKIT_KAFKA_LIBS"])
            elif kafka_dir is not None:
                kafka_libs = kafka_dir / "libs"
            else:
                kafka_libs = self.state / "kafka-libs"
        self.kafka_libs = kafka_libs
        self.pythons = [Path(p) for p in pythons] or [Path(sys.executable)]

    # ------------------------------------------------------------------ bookkeeping

    def load_ports(self) -> dict[str, Any]:
        f = self.state / "ports.json"
        return dict(json.loads(f.read_text())) if f.exists() else {}

    def save_ports(self, ports: dict[str, Any]) -> None:
        (self.state / "ports.json").write_text(json.dumps(ports, indent=2))

    def write_env(self, ports: dict[str, Any]) -> None:
        (self.state / "env").write_text("".join(f"export {line}\n" for line in env_lines(ports)))

    def is_up(self, name: str) -> bool:
        """Whether ``name`` (one of :data:`ALL`) was started here and answers on its port(s)."""
        ports = self.load_ports()
        if name not in ports:
            return False
        if name == "cluster":
            return all(cluster_ok(int(p)) for p in ports["cluster"])
        return port_open(int(ports[name]))

    # ------------------------------------------------------------------ redis

    def start_redis_node(self, name: str, port: int, *extra: str) -> None:
        d = self.state / name
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

    def start_redis(self, ports: dict[str, Any]) -> None:
        port = int(ports.get("redis") or free_port(6390))
        ports["redis"] = port
        self.start_redis_node("redis", port)
        log(f"redis up on 127.0.0.1:{port}")

    def start_cluster(self, ports: dict[str, Any]) -> None:
        nodes = [int(p) for p in (ports.get("cluster") or free_cluster_ports(7390, 3))]
        ports["cluster"] = nodes
        fresh = False
        for i, p in enumerate(nodes):
            d = self.state / f"cluster-{i}"
            if not read_pid(d / "redis.pid"):
                shutil.rmtree(d, ignore_errors=True)
                fresh = True
            self.start_redis_node(f"cluster-{i}", p, "--cluster-enabled", "yes",
                                  "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
        if fresh or not cluster_ok(nodes[0]):
            run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in nodes],
                 "--cluster-replicas", "0", "--cluster-yes"])
        wait_for(lambda: all(cluster_ok(p) for p in nodes), 30, "redis cluster", self.state / "cluster-0" / "redis.log")
        log(f"redis cluster up on ports {nodes}")

    def stop_redis_nodes(self) -> None:
        for d in sorted(self.state.glob("redis")) + sorted(self.state.glob("cluster-*")):
            pid = read_pid(d / "redis.pid")
            if pid:
                kill_pid(pid, f"redis {d.name}")

    # ------------------------------------------------------------------ postgres

    def pg_dir_record(self) -> Path:
        """The file in the state dir that names this state's PostgreSQL directory (see :meth:`pg_home`)."""
        return self.state / "pg-dir"

    def pg_home(self) -> Path:
        """This state's PostgreSQL directory: ``data/``, ``sock/`` and ``postgres.log``.

        It lives under the system temp dir, not in the checkout: a clone in a directory the ``postgres`` user
        cannot traverse (a mode-700 home, ``mktemp -d``) must still work. Made with ``mkdtemp`` (mode 700, a
        random name, so no other user can pre-create or redirect it), owned by ``postgres`` when run as root,
        recorded in ``pg-dir`` and removed by :meth:`stop_postgres`.
        """
        recorded = self.pg_dir_record()
        if recorded.exists():
            home = Path(recorded.read_text().strip())
            if home.is_dir() and home.name.startswith("distkit-pg-"):
                return home
        parents = [Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")]
        parent = next((p for p in parents if p.is_dir() and world_searchable(p)), None)
        if parent is None:
            raise SetupError(f"no temp dir the postgres user can reach among {[str(p) for p in parents]}; set TMPDIR")
        home = Path(tempfile.mkdtemp(prefix="distkit-pg-", dir=parent))
        self.state.mkdir(parents=True, exist_ok=True)
        recorded.write_text(f"{home}\n")
        return home

    def start_postgres(self, ports: dict[str, Any]) -> None:
        bindir = pg_bindir()
        home = self.pg_home()
        data, sock, logf = home / "data", home / "sock", home / "postgres.log"
        port = int(ports.get("postgres") or free_port(5440))
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
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SetupError(f"postgres failed to start: {res.stderr.strip()}" + tail(logf))
        exists = subprocess.run([str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                 "-tAc", "SELECT 1 FROM pg_database WHERE datname='distkit_test'"],
                                capture_output=True, text=True, check=False).stdout.strip()
        if exists != "1":
            run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "distkit_test"])
        log(f"postgres up on 127.0.0.1:{port} (database distkit_test, cluster in {home})")

    def stop_postgres_cluster(self, data: Path) -> None:
        if read_pid_pg(data) is None:
            return
        subprocess.run(as_pg_user([str(pg_bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, check=False)
        pid = read_pid_pg(data)
        if pid:
            kill_pid(pid, "postgres")

    def stop_postgres(self) -> None:
        """Stop this state's cluster and remove its directory (also stops one in the old ``STATE/pg`` place)."""
        self.stop_postgres_cluster(self.state / "pg" / "data")
        recorded = self.pg_dir_record()
        if not recorded.exists():
            return
        home = Path(recorded.read_text().strip())
        if home.name.startswith("distkit-pg-"):  # never remove anything but a directory pg_home() made
            self.stop_postgres_cluster(home / "data")
            shutil.rmtree(home, ignore_errors=True)
        recorded.unlink(missing_ok=True)

    # ------------------------------------------------------------------ kafka

    @property
    def kafka_dir(self) -> Path:
        """Where ``pom.xml`` and ``log4j2.properties`` are (written from this module's copies if not given)."""
        if self._kafka_dir is not None:
            return self._kafka_dir
        conf = self.state / "kafka-conf"
        conf.mkdir(parents=True, exist_ok=True)
        for name, text in (("pom.xml", KAFKA_POM), ("log4j2.properties", KAFKA_LOG4J)):
            if not (conf / name).exists() or (conf / name).read_text() != text:
                (conf / name).write_text(text)
        return conf

    def kafka_libs_ready(self) -> bool:
        libs = self.kafka_libs
        return libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")) and any(libs.glob("slf4j-api-*.jar"))

    def ensure_kafka_libs(self) -> None:
        if self.kafka_libs_ready():
            return
        if shutil.which("java") is None:
            raise SetupError("java not found: Kafka needs Java 17 (`apt-get install -y openjdk-17-jre-headless`)")
        if shutil.which("mvn") is None:
            apt_install("maven")
        log(f"resolving Kafka jars from Maven Central ({self.kafka_dir / 'pom.xml'})")
        libs = self.kafka_libs
        tmp = libs.with_name(libs.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        res = subprocess.run(["mvn", "-q", "-B", "-f", str(self.kafka_dir / "pom.xml"), "dependency:copy-dependencies",
                              f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SetupError("mvn could not resolve Kafka:\n" + (res.stdout + res.stderr)[-3000:])
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)

    def kafka_java(self) -> list[str]:
        if shutil.which("java") is None:
            raise SetupError("java not found: Kafka needs Java 17 (`apt-get install -y openjdk-17-jre-headless`)")
        return ["java", "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.kafka_dir / 'log4j2.properties'}",
                "-cp", f"{self.kafka_libs}/*"]

    def kafka_ready(self, port: int) -> bool:
        """A client can create (or see) a topic: the broker is really serving, not just listening."""
        if not port_open(port):
            return False
        code = (
            "import sys\n"
            "from confluent_kafka.admin import AdminClient, NewTopic\n"
            f"a=AdminClient({{'bootstrap.servers':'127.0.0.1:{port}'}})\n"
            "f=a.create_topics([NewTopic('distkit-ready',1,1)],operation_timeout=5)\n"
            "try: f['distkit-ready'].result(timeout=8)\n"
            "except Exception as e:\n"
            "    if 'TOPIC_ALREADY_EXISTS' not in str(e): raise\n"
        )
        for py in self.pythons:
            if not py.exists():
                continue
            chk = subprocess.run([str(py), "-c", "import confluent_kafka"], capture_output=True, check=False)
            if chk.returncode != 0:
                continue
            return subprocess.run([str(py), "-c", code], capture_output=True, timeout=20, check=False).returncode == 0
        return True  # no client installed yet: an open port is the best we can check

    def format_kafka_storage(self, props: Path, cluster_id: str) -> None:
        """``kafka-storage format``. The id goes as ``--cluster-id=<id>``: a urlsafe-base64 id starts with "-" one
        time in 64, and argparse would take ``-t -xyz`` for a missing value."""
        fmt = subprocess.run([*self.kafka_java(), "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                              "-c", str(props)], capture_output=True, text=True, check=False)
        if fmt.returncode != 0:
            raise SetupError("kafka storage format failed:\n" + (fmt.stdout + fmt.stderr)[-3000:])

    def start_kafka_node(self, d: Path, port: int, cport: int, *, timeout_s: float = KAFKA_START_TIMEOUT_S) -> int:
        """Start a single-node KRaft broker with its state in ``d``; returns its pid.

        The data in ``d`` is kept if it was formatted for the same ports (a restart: topics, committed offsets
        and transaction state survive); otherwise ``d`` is wiped and formatted afresh."""
        self.ensure_kafka_libs()
        pidfile, logf, props = d / "kafka.pid", d / "kafka.log", d / "server.properties"
        wanted = kafka_properties(port, cport, d / "data")
        reuse = (d / "data" / "meta.properties").exists() and props.exists() and props.read_text() == wanted
        if not reuse:
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            props.write_text(wanted)
            self.format_kafka_storage(props, base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        t0 = time.monotonic()
        with open(logf, "a") as out:
            proc = subprocess.Popen([*self.kafka_java(), "kafka.Kafka", str(props)], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        pidfile.write_text(str(proc.pid))

        def up() -> bool:
            if proc.poll() is not None:
                raise SetupError(f"kafka exited with code {proc.returncode}" + tail(logf))
            return self.kafka_ready(port)

        wait_for(up, timeout_s, f"kafka on port {port}", logf)
        log(f"kafka up on 127.0.0.1:{port} in {time.monotonic() - t0:.1f} s ({'data kept' if reuse else 'fresh'})")
        return proc.pid

    def stop_kafka_node(self, d: Path, timeout_s: float = 30.0) -> None:
        """Stop the broker whose state is in ``d`` (SIGTERM: a clean shutdown; its data stays for a restart)."""
        pid = read_pid(d / "kafka.pid")
        if pid:
            kill_pid(pid, "kafka", timeout_s=timeout_s)

    def start_kafka(self, ports: dict[str, Any]) -> None:
        d = self.state / "kafka"
        port = int(ports.get("kafka") or free_port(9392))
        cport = int(ports.get("kafka_controller") or free_port(9393))
        if cport == port:
            cport = free_port(0)
        ports["kafka"], ports["kafka_controller"] = port, cport
        if read_pid(d / "kafka.pid") and port_open(port):
            log(f"kafka already up on 127.0.0.1:{port}")
            return
        self.start_kafka_node(d, port, cport)

    def stop_kafka(self) -> None:
        self.stop_kafka_node(self.state / "kafka")

    # ------------------------------------------------------------------ commands

    def start(self, which: Sequence[str]) -> dict[str, Any]:
        """Start ``which`` (names from :data:`ALL`; already running ones are kept); the recorded ports."""
        unknown = set(which) - set(ALL)
        if unknown:
            raise SetupError(f"unknown service(s) {sorted(unknown)}; choose from {ALL}")
        self.state.mkdir(parents=True, exist_ok=True)
        ports = self.load_ports()
        starters: dict[str, Callable[[dict[str, Any]], None]] = {
            "redis": self.start_redis,
            "cluster": self.start_cluster,
            "postgres": self.start_postgres,
            "kafka": self.start_kafka,
        }
        for name in which:
            starters[name](ports)
            self.save_ports(ports)
            self.write_env(ports)
        return ports

    def stop(self) -> None:
        """Stop everything started here and forget the ports (Kafka's data dir stays, PostgreSQL's is removed)."""
        if not self.state.exists():
            return
        self.stop_kafka()
        self.stop_postgres()
        self.stop_redis_nodes()
        for f in ("ports.json", "env"):
            (self.state / f).unlink(missing_ok=True)
        log("all services stopped")

    def stop_service(self, name: str) -> None:
        """Stop only ``name`` and forget its ports (what a test session started, leaving the rest running)."""
        if name == "kafka":
            self.stop_kafka()
        elif name == "postgres":
            self.stop_postgres()
        elif name in ("redis", "cluster"):
            dirs = [self.state / "redis"] if name == "redis" else sorted(self.state.glob("cluster-*"))
            for d in dirs:
                pid = read_pid(d / "redis.pid")
                if pid:
                    kill_pid(pid, f"redis {d.name}")
        else:
            raise SetupError(f"unknown service {name!r}; choose from {ALL}")
        ports = self.load_ports()
        for key in (name, "kafka_controller") if name == "kafka" else (name,):
            ports.pop(key, None)
        if self.state.exists():
            self.save_ports(ports)
            self.write_env(ports)

    def status_lines(self) -> list[str]:
        ports = self.load_ports()
        return [f"{name:9} {'up' if self.is_up(name) else 'down':5} {ports.get(name, '')}" for name in ALL]


USAGE = __doc__ or ""


def main(argv: Sequence[str], services: LocalServices | None = None, usage: str = USAGE) -> int:
    """The ``start|stop|env|status`` command line over ``services`` (default: ``$DISTKIT_SERVICES_DIR``, else
    ``./.distkit-services``); distkit's ``infra/services.py`` is this with the checkout's state directory."""
    argv = list(argv)
    if not argv or argv[0] not in {"start", "stop", "env", "status"}:
        print(usage)
        return 2
    if services is None:
        services = LocalServices(os.environ.get("DISTKIT_SERVICES_DIR") or ".distkit-services")
    try:
        if argv[0] == "start":
            ports = services.start(argv[1:] or list(ALL))
            print(f"# services up; load them with:  set -a; . {services.state / 'env'}; set +a")
            for line in env_lines(ports):
                print(f"export {line}")
        elif argv[0] == "stop" and argv[1:] == ["kafka"]:
            services.stop_kafka()  # only Kafka, data kept: `start kafka` brings the same broker back
        elif argv[0] == "stop":
            services.stop()
        elif argv[0] == "env":
            for line in env_lines(services.load_ports()):
                print(f"export {line}")
        else:
            for line in services.status_lines():
                print(line)
    except (SetupError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else ""
        print(f"[services] ERROR: {exc}\n{detail or ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
