"""distkit.testing: the pytest plugin users enable, run the way a user runs it (``pytester``), and the decision of
where each service comes from (env URL -> testcontainers when Docker answers -> local server), with the
reachability probe faked where there is no Docker."""

from __future__ import annotations

import http.server
import os
import socket
import socketserver
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from distkit.errors import InvalidArgumentError
from distkit.testing import FakeClock
from distkit.testing.provision import (
    ServiceProvider,
    ServiceUnavailable,
    choose_source,
    docker_reachable,
    local_available,
    parse_sources,
)
from distkit.testing.services import KAFKA_LOG4J, KAFKA_POM, LocalServices, port_open

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
URLS = ("DISTKIT_REDIS_URL", "DISTKIT_REDIS_CLUSTER_NODES", "DISTKIT_DATABASE_URL", "DISTKIT_KAFKA_BOOTSTRAP")

USER_SUITE = '''
import json, pathlib
import pytest
from sqlalchemy import text

SEEN = pathlib.Path(__file__).parent / "seen.json"


def record(**kw):
    seen = json.loads(SEEN.read_text()) if SEEN.exists() else {}
    seen.update(kw)
    SEEN.write_text(json.dumps(seen))


def test_redis(distkit_redis, distkit_namespace):
    distkit_redis.set(f"{distkit_namespace}:k", "v")
    assert distkit_redis.get(f"{distkit_namespace}:k") == b"v"
    record(redis_ns=distkit_namespace)


@pytest.mark.asyncio
async def test_async_redis(distkit_async_redis, distkit_namespace):
    await distkit_async_redis.set(f"{distkit_namespace}:a", "1")
    assert await distkit_async_redis.incr(f"{distkit_namespace}:a") == 2
    record(async_ns=distkit_namespace)


def test_cluster(distkit_redis_cluster, distkit_namespace):
    keys = [f"{distkit_namespace}:{i}" for i in range(3)]
    for k in keys:
        distkit_redis_cluster.set(k, "x")
    assert sum(distkit_redis_cluster.exists(k) for k in keys) == 3
    record(cluster_ns=distkit_namespace)


def test_postgres(distkit_pg_engine, distkit_pg_schema):
    with distkit_pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n int)"))
        conn.execute(text("INSERT INTO t VALUES (1), (2)"))
        assert conn.execute(text("SELECT current_schema()")).scalar_one() == distkit_pg_schema
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 2
    record(schema=distkit_pg_schema)


def test_kafka(distkit_new_topic, distkit_kafka_bootstrap):
    from distkit.messaging import KafkaBroker

    topic = distkit_new_topic(partitions=2)
    broker = KafkaBroker(distkit_kafka_bootstrap)
    with broker.transactional_producer(topic) as tx:
        tx.send(topic, {"n": 1}, key="a")
    consumer = broker.consumer(group_id=topic, topics=[topic])
    got = [m.value for m in consumer.poll_iter(timeout_s=10, max_messages=1)]
    consumer.close()
    broker.close()
    assert got == [{"n": 1}]
    record(topic=topic)


def test_no_servers(distkit_broker, distkit_fake_clock):
    with distkit_broker.transactional_producer("p") as tx:
        tx.send("orders", {"id": 1})
    consumer = distkit_broker.consumer(group_id="g", topics=["orders"])
    assert [m.value for m in consumer.poll_iter(timeout_s=0.01, max_messages=5, idle_timeout_s=0.2)] == [{"id": 1}]
    distkit_fake_clock.sleep(1.5)
    assert distkit_fake_clock() == 1_700_000_001_500
'''


@pytest.fixture
def user_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project: the plugin enabled in its conftest.py, pytest-asyncio in its default (strict) mode."""
    pytester.makeconftest('pytest_plugins = ["distkit.testing.plugin"]\n')
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\ntimeout = 60\n")
    return pytester


# --------------------------------------------------------------------------- the plugin, as a user runs it


def test_user_suite_gets_every_service_from_the_env_urls_and_is_cleaned_up(
    user_suite, redis_client, redis_cluster, pg_engine, kafka_bootstrap, monkeypatch
):
    import json

    from confluent_kafka.admin import AdminClient
    from sqlalchemy import text

    monkeypatch.setenv("DISTKIT_REQUIRE_SERVICES", "1")
    monkeypatch.delenv("DISTKIT_TEST_SERVICES", raising=False)
    user_suite.makepyfile(test_user=USER_SUITE)
    # a subprocess: whatever the user's tests leave behind (threads, clients) stays out of this process, where
    # later tests count distkit's threads
    result = user_suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    seen = json.loads((user_suite.path / "seen.json").read_text())
    # each test's keys, schema and topic are gone afterwards
    assert list(redis_client.scan_iter(match=f"*{seen['redis_ns']}*")) == []
    assert list(redis_client.scan_iter(match=f"*{seen['async_ns']}*")) == []
    assert list(redis_cluster.scan_iter(match=f"*{seen['cluster_ns']}*")) == []
    with pg_engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": seen["schema"]})
        assert left.scalar_one() == 0
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert seen["topic"] not in topics


def test_missing_service_is_a_skip_or_under_require_services_an_error(user_suite, monkeypatch):
    user_suite.makepyfile(test_user="def test_redis(distkit_redis):\n    pass\n\ndef test_clock(distkit_fake_clock):\n"
                          "    assert distkit_fake_clock() == 1_700_000_000_000\n")
    for var in URLS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DISTKIT_TEST_SERVICES", "env")  # no Docker, no local servers: only the URL counts
    monkeypatch.delenv("DISTKIT_REQUIRE_SERVICES", raising=False)
    skipped = user_suite.runpytest("-p", "no:cacheprovider", "-rs")
    skipped.assert_outcomes(passed=1, skipped=1)
    skipped.stdout.fnmatch_lines(["*Redis is not available: DISTKIT_REDIS_URL is unset*"])
    monkeypatch.setenv("DISTKIT_REQUIRE_SERVICES", "1")
    failed = user_suite.runpytest("-p", "no:cacheprovider")
    failed.assert_outcomes(passed=1, errors=1)
    assert "Redis is not available: DISTKIT_REDIS_URL is unset [DISTKIT_REQUIRE_SERVICES=1]" in failed.stdout.lines


def test_loading_the_plugin_imports_no_client_library():
    code = (
        "import sys, distkit.testing.plugin, distkit.testing.services, distkit.testing.provision\n"
        "print(sorted({'redis', 'sqlalchemy', 'confluent_kafka', 'testcontainers', 'docker'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_pytest11_entry_point_loads_the_plugin_and_tolerates_pytest_plugins_too(pytester, monkeypatch, tmp_path):
    """The lines the lead adds to pyproject.toml, as an installed distribution's entry point; a conftest that
    also lists the plugin in ``pytest_plugins`` (distkit's own) must not register it twice."""
    site = tmp_path / "site"
    dist = site / "distkit_plugin_probe-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: distkit-plugin-probe\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\ndistkit.testing.plugin = distkit.testing.plugin\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", ""), str(ROOT)]))
    pytester.makepyfile(test_ep="def test_clock(distkit_fake_clock, distkit_broker):\n"
                        "    assert distkit_fake_clock.advance(5) == 1_700_000_000_005\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.makeconftest('pytest_plugins = ["distkit.testing.plugin"]\n')
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_fake_clock_is_the_suites_clock():
    from tests.fakeclock import FakeClock as SuiteClock

    assert SuiteClock is FakeClock
    clock = FakeClock(1000)
    clock.sleep(0.0004)  # any positive wait moves the clock at least 1 ms
    clock.sleep(0)
    assert (clock(), clock.sleeps) == (1001, [0.0004, 0])


# --------------------------------------------------------------------------- the decision, probes faked


class Probe:
    def __init__(self, answer: bool) -> None:
        self.answer, self.calls = answer, 0

    def __call__(self, *args: Any) -> bool:
        self.calls += 1
        return self.answer


def decide(service: str, environ: dict[str, str], docker: Probe, *, tc: bool = True, local: bool = True,
           allowed: tuple[str, ...] = ("env", "docker", "local")) -> Any:
    return choose_source(service, environ=environ, allowed=allowed, docker_reachable=docker,
                         testcontainers_installed=Probe(tc), local_available=Probe(local))


def test_env_url_wins_and_docker_is_not_even_probed():
    docker = Probe(True)
    d = decide("redis", {"DISTKIT_REDIS_URL": "redis://h:1/0"}, docker)
    assert (d.source, docker.calls) == ("env", 0)


def test_docker_when_reachable_else_falls_back_to_local():
    up, down = Probe(True), Probe(False)
    assert decide("postgres", {}, up).source == "docker"
    fallback = decide("postgres", {}, down)
    assert (fallback.source, down.calls) == ("local", 1)
    assert decide("kafka", {}, up, tc=False).source == "local"  # testcontainers not installed: Docker unused
    assert decide("cluster", {}, up).source == "local"  # no Redis Cluster container


def test_nothing_available_says_why_for_each_source():
    d = decide("kafka", {}, Probe(False), local=False)
    assert d.source is None
    assert d.why == (
        "DISTKIT_KAFKA_BOOTSTRAP is unset; docker: no Docker engine answers (DOCKER_HOST / /var/run/docker.sock); "
        "local: java is not installed"
    )
    assert decide("redis", {}, Probe(True), allowed=("env",)).why == "DISTKIT_REDIS_URL is unset"


def test_sources_are_validated():
    assert parse_sources("env, local") == ("env", "local")
    with pytest.raises(InvalidArgumentError, match="unknown service source"):
        parse_sources("env,podman")
    with pytest.raises(InvalidArgumentError, match="unknown service"):
        decide("mongodb", {}, Probe(True))


def test_provider_probes_docker_once_and_remembers_a_missing_service(tmp_path):
    docker = Probe(False)
    provider = ServiceProvider(allowed=("env", "docker"), state_dir=tmp_path, environ={}, docker_probe=docker,
                               testcontainers_probe=Probe(True), local_probe=Probe(True))
    for service in ("redis", "postgres", "kafka", "redis"):
        with pytest.raises(ServiceUnavailable, match="is not available"):
            provider.get(service)
    assert docker.calls == 1
    provider.close()


class FakeContainer:
    """Stands in for testcontainers' containers: records the documented calls the provider makes."""

    log: list[str] = []

    def __init__(self, image: str, **kwargs: Any) -> None:
        self.image, self.kwargs, self.port = image, kwargs, 6379
        self.log.append(f"new {type(self).__name__} {image} {kwargs}")

    def with_kraft(self) -> FakeContainer:
        self.log.append("with_kraft")
        return self

    def start(self) -> FakeContainer:
        self.log.append(f"start {self.image}")
        return self

    def stop(self) -> None:
        self.log.append(f"stop {self.image}")

    def get_container_host_ip(self) -> str:
        return "10.0.0.7"

    def get_exposed_port(self, port: int) -> int:
        return 40000 + port % 1000

    def get_connection_url(self) -> str:
        return f"postgresql+{self.kwargs['driver']}://test:test@10.0.0.7:45432/test"

    def get_bootstrap_server(self) -> str:
        return "10.0.0.7:49092"


def test_provider_starts_testcontainers_and_stops_them_at_close(tmp_path, monkeypatch):
    FakeContainer.log = []
    for name, attr in (("redis", "RedisContainer"), ("postgres", "PostgresContainer"), ("kafka", "KafkaContainer")):
        module = types.ModuleType(f"testcontainers.community.{name}")
        setattr(module, attr, type(attr, (FakeContainer,), {}))
        monkeypatch.setitem(sys.modules, f"testcontainers.community.{name}", module)
    provider = ServiceProvider(environ={}, state_dir=tmp_path, docker_probe=Probe(True),
                               testcontainers_probe=Probe(True), local_probe=Probe(True))
    assert provider.get("redis") == "redis://10.0.0.7:40379/0"
    assert provider.get("postgres") == "postgresql+psycopg://test:test@10.0.0.7:45432/test"
    assert provider.get("kafka") == "10.0.0.7:49092"
    assert provider.get("redis") == "redis://10.0.0.7:40379/0"  # one container per session
    provider.close()
    assert FakeContainer.log == [
        "new RedisContainer redis:7-alpine {}", "start redis:7-alpine",
        "new PostgresContainer postgres:16-alpine {'driver': 'psycopg'}", "start postgres:16-alpine",
        "new KafkaContainer confluentinc/cp-kafka:7.6.0 {}", "with_kraft", "start confluentinc/cp-kafka:7.6.0",
        "stop confluentinc/cp-kafka:7.6.0", "stop postgres:16-alpine", "stop redis:7-alpine",
    ]


def test_a_container_that_fails_to_start_is_reported_once(tmp_path, monkeypatch):
    module = types.ModuleType("testcontainers.community.redis")
    starts = []

    class Broken(FakeContainer):
        def start(self) -> FakeContainer:
            starts.append(1)
            raise RuntimeError("pull access denied for redis")

    module.RedisContainer = Broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "testcontainers.community.redis", module)
    provider = ServiceProvider(environ={}, state_dir=tmp_path, docker_probe=Probe(True),
                               testcontainers_probe=Probe(True), local_probe=Probe(True))
    for _ in range(2):
        with pytest.raises(ServiceUnavailable, match="Redis via docker failed to start: pull access denied"):
            provider.get("redis")
    assert len(starts) == 1


# --------------------------------------------------------------------------- the real probe and the local source


class _Ping(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b"OK" if self.path == "/_ping" and self.status == 200 else b"nope"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _UnixHTTP(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> Any:
        conn, _ = super().get_request()
        return conn, ("local", 0)


@pytest.mark.parametrize("status, expected", [(200, True), (500, False)])
def test_docker_probe_pings_the_engine_api_over_the_unix_socket(tmp_path, status, expected):
    sock = tmp_path / "docker.sock"
    handler = type("Handler", (_Ping,), {"status": status})
    server = _UnixHTTP(str(sock), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        assert docker_reachable({"DOCKER_HOST": f"unix://{sock}"}) is expected
    finally:
        server.shutdown()
        server.server_close()


def test_docker_probe_is_false_without_an_engine(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert docker_reachable({"DOCKER_HOST": f"tcp://127.0.0.1:{closed}"}) is False
    assert docker_reachable({"DOCKER_HOST": f"unix://{tmp_path / 'absent.sock'}"}) is False


@pytest.mark.skipif(not local_available("redis"), reason="redis-server is not installed (make test installs it)")
def test_local_source_starts_a_redis_and_stops_only_what_it_started(tmp_path, redis_url):
    import redis

    provider = ServiceProvider(allowed=("local",), state_dir=tmp_path / "state", environ={})
    url = provider.get("redis")
    assert provider.decisions["redis"].source == "local" and url.startswith("redis://127.0.0.1:")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    client = redis.Redis.from_url(url)
    assert client.ping() is True
    client.close()
    # a second session finds it running: uses it, and leaves it running at its end
    again = ServiceProvider(allowed=("local",), state_dir=tmp_path / "state", environ={})
    assert again.get("redis") == url
    again.close()
    assert port_open(port)
    provider.close()
    assert not port_open(port)
    assert "redis" not in LocalServices(tmp_path / "state").load_ports()


def test_the_packaged_kafka_files_match_the_checkouts():
    assert (ROOT / "infra" / "kafka" / "pom.xml").read_text() == KAFKA_POM
    assert (ROOT / "infra" / "kafka" / "log4j2.properties").read_text() == KAFKA_LOG4J


def _checkout_kafka_libs() -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("distkit_infra_services_libs", ROOT / "infra" / "services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.KAFKA_LIBS)


@pytest.mark.slow
@pytest.mark.skipif(not all(map(local_available, ("cluster", "postgres", "kafka"))),
                    reason="redis-server, initdb or java is not installed (make test installs them)")
def test_local_source_starts_cluster_postgres_and_kafka_and_stops_them(tmp_path, monkeypatch, kafka_bootstrap):
    """The last resort for each of the other services, end to end (about 10 s: a private KRaft broker)."""
    from confluent_kafka.admin import AdminClient
    from sqlalchemy import create_engine, text

    from distkit.config import Settings

    libs = _checkout_kafka_libs()
    if not any(libs.glob("kafka_2.13-*.jar")):
        pytest.skip(f"no Kafka jars under {libs} (run `python infra/services.py start kafka` once)")
    monkeypatch.setenv("DISTKIT_KAFKA_LIBS", str(libs))
    provider = ServiceProvider(allowed=("local",), state_dir=tmp_path / "state", environ={})
    try:
        nodes = Settings.from_env({"DISTKIT_REDIS_CLUSTER_NODES": provider.get("cluster")}).redis_cluster()
        assert nodes.ping() is True and len(nodes.get_primaries()) == 3
        nodes.close()
        engine = create_engine(provider.get("postgres"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar_one() == "distkit_test"
        engine.dispose()
        bootstrap = provider.get("kafka")
        assert bootstrap != kafka_bootstrap  # its own broker, not the shared one
        assert "distkit-ready" in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        assert provider.started_locally == ["cluster", "postgres", "kafka"]
        ports = LocalServices(tmp_path / "state").load_ports()
    finally:
        provider.close()
    assert not any(port_open(int(p)) for p in [*ports["cluster"], ports["postgres"], ports["kafka"]])
    assert LocalServices(tmp_path / "state").load_ports() == {}
