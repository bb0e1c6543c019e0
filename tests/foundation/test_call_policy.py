"""The call policy of distkit._redis.Runner / AsyncRunner on real servers: the client's own pool (max_connections,
health checks, close), the client's retry budget (no resend with retries off), the per-client outage breaker,
fork, asyncio cancellation, error replies, and distkit's own per-call telemetry."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis
import redis.asyncio as aredis
from redis.backoff import ConstantBackoff, NoBackoff
from redis.retry import Retry

from distkit._redis import (
    AsyncRunner,
    CircuitOpenError,
    PoolExhaustedError,
    RedisUnavailableError,
    Runner,
    Script,
    breaker_for,
    on_call,
)
from distkit.errors import BackendUnavailableError
from tests import faults
from tests.faults import server_clients

redis_proxy = faults.redis_proxy  # the fixture

COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
SLOW = "local t = redis.call('TIME'); local t0 = t[1] * 1e6 + t[2]; " + (
    "while true do t = redis.call('TIME'); if t[1] * 1e6 + t[2] - t0 > tonumber(ARGV[1]) * 1000 then break end end "
    "return ARGV[2]"
)


def inline(source: str, name: str = "test/inline") -> Script:
    script = Script.__new__(Script)
    script.name, script.source = name, source
    script.sha = hashlib.sha1(source.encode()).hexdigest()
    return script


def host_port(url: str) -> dict:
    hp = url.split("//", 1)[1].split("/", 1)[0]
    host, port = hp.rsplit(":", 1)
    return {"host": host, "port": int(port)}


# --------------------------------------------------------------------------- the client's pool


def test_connections_never_exceed_max_connections_with_a_blocking_pool(private_redis):
    pool = redis.BlockingConnectionPool.from_url(private_redis.url, max_connections=2, timeout=20)
    client = redis.Redis(connection_pool=pool)
    runner, script = Runner(client), inline(COUNT)
    assert runner.lane is not None  # the fast path, on the client's pool
    start, peak, stop = threading.Barrier(17), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], server_clients(private_redis.url))

    def work() -> None:
        start.wait()
        for _ in range(100):
            runner(script, ["n"], [1], deadline=time.monotonic() + 30)

    sampler = threading.Thread(target=sample)
    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    sampler.start()
    start.wait()
    for t in threads:
        t.join()
    stop.set()
    sampler.join()
    assert int(client.get("n")) == 1600
    assert len(pool._connections) <= 2  # what the pool made
    assert peak[0] <= 2 and server_clients(private_redis.url) <= 2  # what the server saw (the old lane: 18)
    client.close()


def test_a_full_non_blocking_pool_raises_pool_exhausted_and_does_not_trip_the_breaker(private_redis):
    client = redis.Redis.from_url(private_redis.url, max_connections=2)
    runner, slow = Runner(client), inline(SLOW)
    assert runner.lane is not None
    breaker_for(client).configure(threshold=1)
    start, errors, done = threading.Barrier(6), [], []

    def work() -> None:
        start.wait()
        try:
            done.append(runner(slow, [], [150, "x"]))
        except PoolExhaustedError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) + len(errors) == 6 and 1 <= len(done) <= 2 and errors
    assert all(isinstance(e, BackendUnavailableError) for e in errors)
    assert not runner.breaker.is_open  # a busy pool is not an outage
    assert server_clients(private_redis.url) <= 2
    client.close()


async def test_async_connections_never_exceed_max_connections(private_redis):
    pool = aredis.BlockingConnectionPool.from_url(private_redis.url, max_connections=10, timeout=20)
    client = aredis.Redis(connection_pool=pool)
    runner, script = AsyncRunner(client), inline(COUNT)
    assert runner.lane is not None

    async def work() -> None:
        for _ in range(20):
            await runner(script, ["n"], [1], deadline=time.monotonic() + 30)

    await asyncio.gather(*(work() for _ in range(100)))
    assert int(await client.get("n")) == 2000
    assert server_clients(private_redis.url) <= 10  # the old lane opened 307 and never closed them
    await pool.aclose()
    assert server_clients(private_redis.url) == 0


def test_client_close_and_pool_disconnect_close_the_runners_sockets(private_redis):
    client = redis.Redis.from_url(private_redis.url)
    runner, script = Runner(client), inline(COUNT)
    runner(script, ["n"], [1])
    runner.command("PING")
    assert server_clients(private_redis.url) == 1
    client.connection_pool.disconnect()
    assert server_clients(private_redis.url) == 0
    assert runner(script, ["n"], [1]) == 2  # reconnects on demand
    client.close()
    assert server_clients(private_redis.url) == 0


def test_health_checks_are_honoured(private_redis):
    client = redis.Redis.from_url(private_redis.url, health_check_interval=0.2)
    observer = redis.Redis.from_url(private_redis.url)
    runner, script = Runner(client), inline(COUNT)
    runner(script, ["n"], [1])
    observer.config_resetstat()
    runner(script, ["n"], [1])  # within the interval: no PING
    assert "cmdstat_ping" not in observer.info("commandstats")
    time.sleep(0.35)  # past the interval (a fixed bound, not a race: nothing else uses this connection)
    runner(script, ["n"], [1])
    assert observer.info("commandstats")["cmdstat_ping"]["calls"] == 1
    observer.close()
    client.close()


# --------------------------------------------------------------------------- the client's retry budget


@pytest.mark.parametrize("retries", [0, 3])
def test_a_dropped_reply_is_resent_only_if_the_clients_retry_allows(redis_proxy, private_redis, retries):
    retry = Retry(NoBackoff(), 0) if retries == 0 else Retry(ConstantBackoff(0.01), retries)
    client = redis.Redis(**host_port(redis_proxy.url), retry=retry)
    runner, script = Runner(client), inline(COUNT)
    assert runner(script, ["n"], [1]) == 1
    redis_proxy.drop_replies = 1  # the next reply is lost and its connection cut: the script DID run
    if retries == 0:
        with pytest.raises(RedisUnavailableError) as info:
            runner(script, ["n"], [1])
        assert info.value.attempts == 1
        assert int(redis.Redis.from_url(private_redis.url).get("n")) == 2  # ran once, never resent
    else:
        assert runner(script, ["n"], [1]) == 3  # the client allows resends: sent again (and so counted twice)
    assert redis_proxy.dropped == 1
    client.close()


async def test_async_dropped_reply_is_not_resent_with_retries_off(redis_proxy, private_redis):
    from redis.asyncio.retry import Retry as AsyncRetry

    client = aredis.Redis(**host_port(redis_proxy.url), retry=AsyncRetry(NoBackoff(), 0))
    runner, script = AsyncRunner(client), inline(COUNT)
    assert await runner(script, ["n"], [1]) == 1
    redis_proxy.drop_replies = 1
    with pytest.raises(RedisUnavailableError):
        await runner(script, ["n"], [1])
    assert int(redis.Redis.from_url(private_redis.url).get("n")) == 2
    await client.aclose()


def test_error_replies_pass_through_unchanged(redis_client, namespace):
    runner = Runner(redis_client)
    k = f"{{{namespace}}}:list"
    redis_client.rpush(k, "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE") as info:
        runner(inline(COUNT), [k], [1])
    assert not isinstance(info.value, BackendUnavailableError)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        runner.command("INCR", k)
    assert runner.breaker.failures == 0
    seconds, micros = runner.command("TIME")  # parsed by the client's response callback, like execute_command
    assert isinstance(seconds, int) and isinstance(micros, int)


def test_noscript_is_answered_by_eval(private_redis):
    client = redis.Redis.from_url(private_redis.url)
    runner, script = Runner(client), inline(COUNT)
    client.script_flush()
    assert runner(script, ["n"], [1]) == 1
    client.script_flush()
    assert runner.many(script, [(["n"], [1])] * 3) == [2, 3, 4]
    client.close()


# --------------------------------------------------------------------------- the breaker


def test_the_breaker_makes_failures_fast_and_recovers_on_its_own(private_redis):
    client = redis.Redis(**host_port(private_redis.url))  # a default client: 10 retries with backoff
    runner, other, script = Runner(client), Runner(client), inline(COUNT)
    assert other.breaker is runner.breaker  # one breaker per client pool
    runner.breaker.configure(threshold=3, base_s=0.2, cap_s=0.4)
    assert runner(script, ["n"], [1]) == 1
    private_redis.stop()
    with pytest.raises(BackendUnavailableError):
        runner(script, ["n"], [1], deadline=time.monotonic() + 2)
    assert runner.breaker.is_open
    t0 = time.perf_counter()
    for _ in range(1000):
        with pytest.raises(CircuitOpenError):
            other(script, ["n"], [1])
    assert time.perf_counter() - t0 < 1.0  # microseconds each, not a connect timeout
    private_redis.start()
    deadline = time.monotonic() + 5
    while True:  # the breaker half-opens within its (capped, jittered) interval; then one probe closes it
        try:
            assert runner(script, ["n"], [1]) == 1
            break
        except CircuitOpenError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert not runner.breaker.is_open and other(script, ["n"], [1]) == 2
    client.close()


def test_one_probe_at_a_time_while_half_open():
    from distkit._redis.policy import Breaker

    b = Breaker(threshold=1, base_s=0.01, cap_s=0.01)
    b.failed(time.monotonic())
    time.sleep(0.02)
    now = time.monotonic()
    b.before(now, now + 1)  # this call probes
    with pytest.raises(CircuitOpenError, match="probing"):
        b.before(now, now + 1)
    b.failed(time.monotonic())  # the probe failed: open again, for a longer interval (capped)
    assert b.is_open and b.opens == 2
    b.succeeded()
    assert not b.is_open and b.failures == 0


def test_a_forked_child_starts_with_a_closed_breaker_and_its_own_connections(private_redis):
    client = redis.Redis.from_url(private_redis.url)
    runner, script = Runner(client), inline(COUNT)
    assert runner(script, ["n"], [1]) == 1
    runner.breaker.configure(threshold=1, base_s=60, cap_s=60)
    runner.breaker.failed(time.monotonic())
    assert runner.breaker.is_open
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ok = not runner.breaker.is_open and runner(script, ["n"], [1]) == 2
            os.write(write_fd, b"ok" if ok else b"bad")
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    assert os.read(read_fd, 10) == b"ok"
    os.waitpid(pid, 0)
    with pytest.raises(CircuitOpenError):
        runner(script, ["n"], [1])  # the parent's breaker is untouched by the child
    runner.breaker.succeeded()
    assert runner(script, ["n"], [1]) == 3
    client.close()


# --------------------------------------------------------------------------- asyncio cancellation


async def test_a_cancelled_call_leaves_no_corrupted_connection(private_redis):
    client = aredis.Redis.from_url(private_redis.url, max_connections=1)  # one connection: reuse is certain
    runner, slow, count = AsyncRunner(client), inline(SLOW), inline(COUNT)
    task = asyncio.create_task(runner(slow, [], [300, "late"]))
    await asyncio.sleep(0.1)  # the script is running on the server, its reply not yet read
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the late reply of the cancelled call must never be read as the answer of a later one
    for i in range(1, 6):
        assert await runner(count, ["n"], [1]) == i
    assert await runner(slow, [], [1, "mine"]) == b"mine"
    assert not client.connection_pool._in_use_connections
    await client.aclose()


async def test_async_deadline_cuts_a_slow_reply_and_the_connection_stays_usable(private_redis):
    client = aredis.Redis.from_url(private_redis.url, max_connections=1)
    runner, slow = AsyncRunner(client), inline(SLOW)
    t0 = time.monotonic()
    with pytest.raises(RedisUnavailableError):
        await runner(slow, [], [400, "late"], deadline=t0 + 0.1)
    assert time.monotonic() - t0 < 0.35
    runner.breaker.succeeded()
    await asyncio.sleep(0.4)  # the server finishes the script (it cannot be interrupted)
    assert await runner(slow, [], [1, "mine"]) == b"mine"
    await client.aclose()


# --------------------------------------------------------------------------- telemetry and other clients


def test_distkit_sees_every_call(redis_client, namespace):
    events = []
    remove = on_call(events.append)
    try:
        runner, script = Runner(redis_client), inline(COUNT, "test/count")
        k = f"{{{namespace}}}:n"
        runner(script, [k], [1])
        runner.many(script, [([k], [1])] * 3)
        runner.command("GET", k)
        with pytest.raises(redis.ResponseError):
            runner.command("LPUSH", k, "x")
        Runner(redis_client, direct=False)(script, [k], [1])  # the client's own path too
    finally:
        remove()
    assert [(e.operation, e.outcome) for e in events] == [
        ("test/count", "ok"),
        ("test/count", "ok"),
        ("GET", "ok"),
        ("LPUSH", "error"),
        ("test/count", "ok"),
    ]
    assert all(e.duration_s >= 0 and e.attempts >= 1 for e in events)


def test_opentelemetry_spans_and_metrics_when_configured(redis_url, tmp_path):
    code = textwrap.dedent(
        f"""
        import redis
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from distkit._redis import Runner

        exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        client = redis.Redis.from_url({redis_url!r})
        runner = Runner(client)
        for _ in range(5):
            runner.command("PING")
        dead = Runner(redis.Redis(host="127.0.0.1", port=1, retry=None))
        try:
            dead.command("PING")
        except redis.ConnectionError:
            pass
        spans = exporter.get_finished_spans()
        points = [p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
                  for m in sm.metrics if m.name == "distkit.redis.call.duration" for p in m.data.data_points]
        outcomes = sorted({{s.attributes["distkit.redis.outcome"] for s in spans}})
        print(len(spans), outcomes, sum(p.count for p in points))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6", "['ok',", "'unavailable']", "6"]


def test_cluster_and_test_doubles_keep_their_own_path_and_share_the_breaker(redis_cluster, namespace):
    import fakeredis

    runner = Runner(redis_cluster)
    assert runner.lane is None and runner.breaker is breaker_for(redis_cluster)
    k = f"{{{namespace}}}:n"
    assert runner(inline(COUNT), [k], [2]) == 2
    assert runner.many(inline(COUNT), [([k], [1])] * 2) == [3, 4]
    fake = Runner(fakeredis.FakeRedis())
    assert fake.lane is None and fake(inline(COUNT), ["n"], [1]) == 1
    fake.breaker.configure(threshold=1, base_s=60, cap_s=60)
    fake.breaker.failed(time.monotonic())
    with pytest.raises(CircuitOpenError):
        fake(inline(COUNT), ["n"], [1])


# --------------------------------------------------------------------------- more pool and breaker properties


def test_a_blocking_pool_wait_is_cut_at_the_deadline(private_redis):
    pool = redis.BlockingConnectionPool.from_url(private_redis.url, max_connections=1, timeout=30)
    client = redis.Redis(connection_pool=pool)
    runner, slow = Runner(client), inline(SLOW)
    holder = threading.Thread(target=lambda: runner(slow, [], [600, "x"]))
    holder.start()
    while not pool._connections or pool.pool.qsize():  # until the only connection is checked out
        time.sleep(0.005)
    t0 = time.monotonic()
    with pytest.raises(PoolExhaustedError):
        runner.command("PING", deadline=t0 + 0.2)  # the pool's own timeout (30 s) does not apply
    assert time.monotonic() - t0 < 0.2 + 0.25
    holder.join()
    assert runner.command("PING") is True and not runner.breaker.is_open
    client.close()
    pool.disconnect()


async def test_async_health_checks_are_honoured(private_redis):
    client = aredis.Redis.from_url(private_redis.url, health_check_interval=0.2)
    observer = redis.Redis.from_url(private_redis.url)
    runner, script = AsyncRunner(client), inline(COUNT)
    await runner(script, ["n"], [1])
    observer.config_resetstat()
    await runner(script, ["n"], [1])
    assert "cmdstat_ping" not in observer.info("commandstats")
    await asyncio.sleep(0.35)
    await runner(script, ["n"], [1])
    assert observer.info("commandstats")["cmdstat_ping"]["calls"] == 1
    observer.close()
    await client.aclose()


def test_breaker_invariants_under_any_sequence_of_events():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from distkit._redis.policy import Breaker

    events = st.lists(st.tuples(st.sampled_from(["call", "fail", "ok"]), st.floats(0, 0.5)), max_size=60)

    @settings(max_examples=200, deadline=None)
    @given(events, st.integers(1, 4))
    def check(seq, threshold):
        b = Breaker(threshold=threshold, base_s=0.1, cap_s=0.4)
        now, consecutive, probes_in_flight = 1000.0, 0, 0
        for kind, dt in seq:
            now += dt
            if kind == "fail":
                b.failed(now)
                consecutive += 1
                probes_in_flight = 0
                assert b.is_open == (consecutive >= threshold) or b.opens > 0
                if b.is_open:
                    assert b.open_until - now <= 0.4 + 1e-9  # capped
            elif kind == "ok":
                b.succeeded()
                consecutive, probes_in_flight = 0, 0
                assert not b.is_open and b.failures == 0
            else:
                try:
                    b.before(now, now + 10)
                except CircuitOpenError:
                    assert b.is_open
                else:
                    if b.is_open:
                        probes_in_flight += 1
                        assert probes_in_flight == 1  # never two probes at once
        if consecutive < threshold and b.opens == 0:
            assert not b.is_open

    check()


def test_an_expired_deadline_sends_nothing_and_is_not_an_outage(redis_client, namespace):
    runner = Runner(redis_client)
    runner.breaker.configure(threshold=1)
    k = f"{{{namespace}}}:n"
    for call in (
        lambda: runner(inline(COUNT), [k], [1], deadline=time.monotonic() - 1),
        lambda: runner.command("INCR", k, deadline=time.monotonic()),
    ):
        with pytest.raises(RedisUnavailableError):
            call()
    assert redis_client.get(k) is None and not runner.breaker.is_open


async def test_async_cluster_keeps_its_own_path_through_the_policy(async_redis_cluster, namespace):
    runner = AsyncRunner(async_redis_cluster)
    assert runner.lane is None and runner.breaker is breaker_for(async_redis_cluster)
    k = f"{{{namespace}}}:n"
    assert await runner(inline(COUNT), [k], [2]) == 2
    assert await runner.command("GET", k) == b"2"
    with pytest.raises(RedisUnavailableError):  # nothing is sent once the deadline has passed
        await runner(inline(COUNT), [k], [1], deadline=time.monotonic() - 0.1)
    assert await runner.command("GET", k) == b"2" and not runner.breaker.is_open
    # (cutting a slow reply at the deadline is tested on a private server: the shared cluster is never stalled)


async def test_async_own_path_is_cut_at_the_deadline(private_redis):
    client = aredis.Redis.from_url(private_redis.url)
    runner = AsyncRunner(client, direct=False)  # redis-py's own command path
    assert runner.lane is None
    t0 = time.monotonic()
    with pytest.raises(RedisUnavailableError):
        await runner(inline(SLOW), [], [400, "late"], deadline=t0 + 0.1)
    assert time.monotonic() - t0 < 0.1 + 0.25
    runner.breaker.succeeded()
    await asyncio.sleep(0.4)  # the server finishes the script
    assert await runner(inline(COUNT), ["n"], [1]) == 1  # and the client's connections are in step
    await client.aclose()


def test_sixteen_threads_with_lost_replies_and_retries_off_run_every_call_exactly_once(redis_proxy, private_redis):
    client = redis.Redis(**host_port(redis_proxy.url), retry=Retry(NoBackoff(), 0), max_connections=16)
    runner, script = Runner(client), inline(COUNT)
    runner.breaker.configure(threshold=10**6)  # keep sending: this test counts executions, not fast failures
    assert runner(script, ["n"], [1]) == 1
    redis_proxy.drop_prefix = b":"  # only the scripts' integer replies, never a connection handshake
    redis_proxy.drop_replies = 30
    start, replies, failures = threading.Barrier(16), [], []

    def work() -> None:
        start.wait()
        for _ in range(50):
            try:
                replies.append(runner(script, ["n"], [1], deadline=time.monotonic() + 10))
            except RedisUnavailableError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(failures) == redis_proxy.dropped == 30  # each lost reply failed its own call, no other
    assert len(set(replies)) == len(replies) == 800 - 30  # every reply belongs to its own call
    assert int(redis.Redis.from_url(private_redis.url).get("n")) == 801  # every call ran exactly once: 0 resent
    client.close()
