"""Where a test session's Redis / Redis Cluster / PostgreSQL / Kafka comes from, decided once per service.

Order (each step only if allowed, see :data:`SOURCES`):

1. ``env``: the ``DISTKIT_*`` variable is set (``DISTKIT_REDIS_URL``, ``DISTKIT_REDIS_CLUSTER_NODES``,
   ``DISTKIT_DATABASE_URL``, ``DISTKIT_KAFKA_BOOTSTRAP``): use it as is; nothing is started or stopped.
2. ``docker``: ``testcontainers`` is installed and a Docker engine answers ``GET /_ping``: start a container
   (``RedisContainer`` / ``PostgresContainer`` / ``KafkaContainer``), stopped when the session ends. There is
   no Redis Cluster container, so the cluster never comes from Docker.
3. ``local``: the server's binaries are installed (``redis-server``, ``initdb``, ``java``):
   :class:`distkit.testing.services.LocalServices` starts it; the session stops what it started.

Standard library only; ``testcontainers`` is imported only when a container is really started.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from distkit.config import ENV_DATABASE_URL, ENV_KAFKA_BOOTSTRAP, ENV_REDIS_CLUSTER_NODES, ENV_REDIS_URL
from distkit.errors import DistkitError, InvalidArgumentError
from distkit.testing.services import LocalServices, env_lines, find_pg_bindir

SERVICES = ("redis", "cluster", "postgres", "kafka")
SOURCES = ("env", "docker", "local")
ENV_VARS = {
    "redis": ENV_REDIS_URL,
    "cluster": ENV_REDIS_CLUSTER_NODES,
    "postgres": ENV_DATABASE_URL,
    "kafka": ENV_KAFKA_BOOTSTRAP,
}
LABELS = {"redis": "Redis", "cluster": "Redis Cluster", "postgres": "PostgreSQL", "kafka": "Kafka"}
# testcontainers images; change them with ServiceProvider(images=...)
IMAGES = {"redis": "redis:7-alpine", "postgres": "postgres:16-alpine", "kafka": "confluentinc/cp-kafka:7.6.0"}


class ServiceUnavailable(DistkitError):
    """No allowed source could provide the service; the message says why for each source."""


def parse_sources(raw: str | Iterable[str]) -> tuple[str, ...]:
    """``"env,docker"`` (or an iterable) -> ``("env", "docker")``; an unknown name is an error."""
    names = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw) if s.strip()]
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise InvalidArgumentError(f"unknown service source(s) {unknown}; choose from {list(SOURCES)}")
    return tuple(names)


# --------------------------------------------------------------------------- probes


def docker_host_socket(environ: Mapping[str, str] | None = None) -> tuple[str, Any] | None:
    """The Docker engine's address as ``(family, address)``: ``$DOCKER_HOST`` (``unix://`` or ``tcp://``), else
    the first default Unix socket that exists, else None."""
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return ("unix", host[len("unix://") :])
    if host.startswith("tcp://"):
        u = urlparse(host)
        return ("tcp", (u.hostname or "127.0.0.1", u.port or 2375))
    for path in ("/var/run/docker.sock", str(Path.home() / ".docker" / "run" / "docker.sock")):
        if Path(path).exists():
            return ("unix", path)
    return None


def docker_reachable(environ: Mapping[str, str] | None = None, timeout_s: float = 1.0) -> bool:
    """Whether a Docker engine answers ``GET /_ping`` with ``OK`` within ``timeout_s`` (no docker SDK needed)."""
    where = docker_host_socket(environ)
    if where is None:
        return False
    family, address = where
    try:
        with socket.socket(socket.AF_UNIX if family == "unix" else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(address)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
    except OSError:
        return False
    head, _, body = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1] == b"200" and body.strip() == b"OK"


def testcontainers_installed() -> bool:
    return importlib.util.find_spec("testcontainers") is not None


def local_available(service: str) -> bool:
    """Whether :class:`LocalServices` can start ``service`` from what is installed (it never installs anything
    for a test session: a missing binary means "not available", not ``apt-get``)."""
    if service in ("redis", "cluster"):
        return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None
    if service == "postgres":
        return find_pg_bindir() is not None
    if service == "kafka":
        return shutil.which("java") is not None
    raise InvalidArgumentError(f"unknown service {service!r}; choose from {list(SERVICES)}")


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Decision:
    """Where ``service`` comes from (``source`` None: nowhere) and why, for skip/fail messages."""

    service: str
    source: str | None
    why: str


def choose_source(
    service: str,
    *,
    environ: Mapping[str, str],
    allowed: Iterable[str],
    docker_reachable: Callable[[], bool],
    testcontainers_installed: Callable[[], bool],
    local_available: Callable[[str], bool],
) -> Decision:
    """The first allowed source that can provide ``service``. Probes run only when their step is reached."""
    if service not in SERVICES:
        raise InvalidArgumentError(f"unknown service {service!r}; choose from {list(SERVICES)}")
    allowed = set(parse_sources(allowed))
    var = ENV_VARS[service]
    reasons: list[str] = []
    if "env" in allowed:
        if environ.get(var):
            return Decision(service, "env", f"{var} is set")
        reasons.append(f"{var} is unset")
    if "docker" in allowed:
        if service == "cluster":
            reasons.append("docker: no Redis Cluster container")
        elif not testcontainers_installed():
            reasons.append("docker: testcontainers is not installed")
        elif not docker_reachable():
            reasons.append("docker: no Docker engine answers (DOCKER_HOST / /var/run/docker.sock)")
        else:
            return Decision(service, "docker", "a Docker engine is reachable")
    if "local" in allowed:
        if local_available(service):
            return Decision(service, "local", "its binaries are installed")
        need = {"redis": "redis-server", "cluster": "redis-server", "postgres": "initdb", "kafka": "java"}[service]
        reasons.append(f"local: {need} is not installed")
    if not allowed:
        reasons.append("no source is allowed")
    return Decision(service, None, "; ".join(reasons))


# --------------------------------------------------------------------------- the session's provider


def _import_first(*modules: str) -> Any:
    """testcontainers >= 4.10 moved its modules under ``testcontainers.community``; older 4.x has them top-level."""
    error: ImportError | None = None
    for name in modules:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            error = exc
    assert error is not None
    raise error


class ServiceProvider:
    """Gives each service's address (URL, ``host:port,...`` or bootstrap) once per session, and stops what it
    started in :meth:`close`. The probes are parameters so the decision can be tested without Docker."""

    def __init__(
        self,
        *,
        allowed: Iterable[str] = SOURCES,
        state_dir: Path | str = ".distkit-services",
        environ: Mapping[str, str] | None = None,
        docker_probe: Callable[[], bool] | None = None,
        testcontainers_probe: Callable[[], bool] = testcontainers_installed,
        local_probe: Callable[[str], bool] = local_available,
        images: Mapping[str, str] | None = None,
    ) -> None:
        self.allowed = parse_sources(allowed)
        self.environ = os.environ if environ is None else environ
        self.local = LocalServices(state_dir)
        self.images = {**IMAGES, **(images or {})}
        self._docker_probe = docker_probe or (lambda: docker_reachable(self.environ))
        self._docker_up: bool | None = None
        self._testcontainers_probe = testcontainers_probe
        self._local_probe = local_probe
        self._results: dict[str, str | ServiceUnavailable] = {}
        self.decisions: dict[str, Decision] = {}
        self.containers: list[Any] = []
        self.started_locally: list[str] = []

    def _docker(self) -> bool:
        if self._docker_up is None:  # probed once per session
            self._docker_up = bool(self._docker_probe())
        return self._docker_up

    def decide(self, service: str) -> Decision:
        if service not in self.decisions:
            self.decisions[service] = choose_source(
                service,
                environ=self.environ,
                allowed=self.allowed,
                docker_reachable=self._docker,
                testcontainers_installed=self._testcontainers_probe,
                local_available=self._local_probe,
            )
        return self.decisions[service]

    def get(self, service: str) -> str:
        """The address of ``service``; :class:`ServiceUnavailable` (remembered: not retried) if there is none."""
        if service not in self._results:
            try:
                self._results[service] = self._provide(service)
            except ServiceUnavailable as exc:
                self._results[service] = exc
            except Exception as exc:  # a failed start: reported once, with its cause
                source = self.decisions[service].source
                self._results[service] = ServiceUnavailable(f"{LABELS[service]} via {source} failed to start: {exc}")
        result = self._results[service]
        if isinstance(result, ServiceUnavailable):
            raise result
        return result

    def _provide(self, service: str) -> str:
        decision = self.decide(service)
        if decision.source == "env":
            return self.environ[ENV_VARS[service]]
        if decision.source == "docker":
            return self._start_container(service)
        if decision.source == "local":
            return self._start_local(service)
        raise ServiceUnavailable(f"{LABELS[service]} is not available: {decision.why}")

    def _start_container(self, service: str) -> str:
        image = self.images[service]
        if service == "redis":
            redis_mod = _import_first("testcontainers.community.redis", "testcontainers.redis")
            container = redis_mod.RedisContainer(image)
            container.start()
            self.containers.append(container)
            return f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(container.port)}/0"
        if service == "postgres":
            pg_mod = _import_first("testcontainers.community.postgres", "testcontainers.postgres")
            container = pg_mod.PostgresContainer(image, driver="psycopg")
            container.start()
            self.containers.append(container)
            return str(container.get_connection_url())
        kafka_mod = _import_first("testcontainers.community.kafka", "testcontainers.kafka")
        container = kafka_mod.KafkaContainer(image).with_kraft()
        container.start()
        self.containers.append(container)
        return str(container.get_bootstrap_server())

    def _start_local(self, service: str) -> str:
        if not self.local.is_up(service):
            self.started_locally.append(service)  # before start: a half-started server is still stopped
            self.local.start([service])
        var = ENV_VARS[service]
        for line in env_lines(self.local.load_ports()):
            name, _, value = line.partition("=")
            if name == var:
                return value
        raise ServiceUnavailable(f"{LABELS[service]}: {self.local.state / 'ports.json'} has no entry")  # unreachable

    def close(self) -> None:
        """Stop the containers and the local servers this provider started (not those it found running)."""
        errors: list[str] = []
        for container in reversed(self.containers):
            try:
                container.stop()
            except Exception as exc:
                errors.append(f"{container!r}: {exc}")
        self.containers.clear()
        for service in reversed(self.started_locally):
            try:
                self.local.stop_service(service)
            except Exception as exc:
                errors.append(f"local {service}: {exc}")
        self.started_locally.clear()
        if errors:
            raise DistkitError("stopping test services failed: " + "; ".join(errors))
