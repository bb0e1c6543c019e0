"""Issue 22: every module's OpenTelemetry metrics, recorded with exact counts against the real servers.

Each test installs its own SDK MeterProvider with an InMemoryMetricReader through
:func:`distkit._metrics.use_meter_provider`, so nothing touches OpenTelemetry's set-once global provider.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from distkit import _metrics
from distkit._redis import key as redis_key
from distkit.errors import IdempotencyInProgressError, StockNotLoadedError
from tests.fakeclock import FakeClock


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    r = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[r])
    with _metrics.use_meter_provider(provider):
        yield r
    provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
    """attributes -> value (counters, gauges) or count (histograms) of metric ``name``."""
    out: dict[frozenset[tuple[str, Any]], Any] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    for p in m.data.data_points:
                        out[frozenset(p.attributes.items())] = getattr(p, "value", None) if hasattr(
                            p, "value") else p.count
    return out


def value(reader: InMemoryMetricReader, name: str, **attrs: Any) -> Any:
    return points(reader, name).get(frozenset(attrs.items()), 0)


def wait_until(pred: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# ------------------------------------------------------------------ the helper itself


def test_without_a_provider_nothing_is_created_and_recording_is_a_no_op() -> None:
    probe = _metrics.counter(f"distkit.test.probe_{uuid.uuid4().hex[:6]}", "1", "test")
    if _metrics.provider() is not None:  # pragma: no cover - another test set OpenTelemetry's global provider
        pytest.skip("a global meter provider is installed in this process")
    probe.add(1, {"a": "b"})
    assert probe._real is None and probe.bind() is None and not _metrics.enabled()


def test_instruments_follow_the_provider_in_use(reader: InMemoryMetricReader) -> None:
    c = _metrics.counter("distkit.test.follow", "1", "test")
    c.add(2, {"k": "v"})
    other = InMemoryMetricReader()
    with _metrics.use_meter_provider(MeterProvider(metric_readers=[other])):
        c.add(5, {"k": "v"})
    c.add(1, {"k": "v"})
    assert value(reader, "distkit.test.follow", k="v") == 3
    assert value(other, "distkit.test.follow", k="v") == 5
    with pytest.raises(ValueError, match="already declared"):
        _metrics.histogram("distkit.test.follow", "1", "test")


# ------------------------------------------------------------------ locks


def test_lock_acquisitions_waits_busy_and_one_loss(reader: InMemoryMetricReader, redis_client: Any,
                                                   namespace: str) -> None:
    from distkit.locks import Locks

    with Locks(redis_client, namespace=namespace, lease_ms=600) as locks:
        for _ in range(3):
            with locks.lock("m"):
                pass
        assert value(reader, "distkit.locks.acquisitions", kind="lock", outcome="acquired") == 3
        assert value(reader, "distkit.locks.wait.duration", kind="lock", outcome="acquired") == 3
        sem = locks.semaphore("s", 1)
        permit = sem.acquire()
        assert permit is not None
        import threading

        other: list[Any] = []
        t = threading.Thread(target=lambda: other.append(sem.acquire(blocking=False)))
        t.start()
        t.join()
        assert other == [None]
        sem.release(permit)
        assert value(reader, "distkit.locks.acquisitions", kind="semaphore", outcome="busy") == 1
        assert value(reader, "distkit.locks.acquisitions", kind="semaphore", outcome="acquired") == 1

        lost: list[int] = []
        lock = locks.lock("gone")
        lock.on_lost = lambda: lost.append(1)
        lock.acquire()
        redis_client.delete(redis_key(namespace, "gone"))
        wait_until(lambda: lost)
        assert value(reader, "distkit.locks.losses", kind="lock") == 1
        assert value(reader, "distkit.locks.acquisitions", kind="lock", outcome="acquired") == 4


# ------------------------------------------------------------------ idempotency


def test_idempotent_one_miss_two_hits_and_an_in_progress_conflict(reader: InMemoryMetricReader, redis_client: Any,
                                                                  namespace: str) -> None:
    from distkit.idempotency import RedisIdempotencyStore, idempotent

    store = RedisIdempotencyStore(redis_client, prefix=namespace)
    runs: list[str] = []

    @idempotent(store, key=lambda k: k)
    def handle(k: str) -> str:
        runs.append(k)
        if k == "nested":
            with pytest.raises(IdempotencyInProgressError):
                handle(k)  # a duplicate while the first still runs
        return k.upper()

    assert [handle("a") for _ in range(3)] == ["A", "A", "A"]
    assert handle("nested") == "NESTED"
    h = f"{handle.__module__}.{handle.__qualname__}"
    assert runs == ["a", "nested"]
    assert value(reader, "distkit.idempotency.misses", handler=h, claim="new") == 2
    assert value(reader, "distkit.idempotency.hits", handler=h, source="store") == 2
    assert value(reader, "distkit.idempotency.in_progress", handler=h) == 1


def test_inbox_one_new_message_two_duplicates(reader: InMemoryMetricReader, pg_engine: Any) -> None:
    from distkit.idempotency import Inbox

    inbox = Inbox(pg_engine, table="m_inbox")
    fresh: list[bool] = []
    for _ in range(3):
        with pg_engine.begin() as conn, inbox.receive(conn, message_id="evt-1", consumer="m-stock") as new:
            fresh.append(new)
    assert fresh == [True, False, False]
    assert value(reader, "distkit.idempotency.misses", handler="m-stock", claim="inbox") == 1
    assert value(reader, "distkit.idempotency.hits", handler="m-stock", source="inbox") == 2


# ------------------------------------------------------------------ messaging


def test_processor_retries_dead_letters_transactions_and_lag(reader: InMemoryMetricReader, kafka_bootstrap: str,
                                                             new_topic: Any) -> None:
    from distkit.messaging import KafkaBroker, Message, TransactionalProcessor

    src, out = new_topic(1), new_topic(1)
    broker = KafkaBroker(kafka_bootstrap, timeout_s=15)
    try:
        producer = broker.producer()
        for v in ("ok", "flaky", "poison"):
            producer.send(src, {"v": v}, key=v)
        producer.flush()
        failed: set[str] = set()

        def handler(msg: Message) -> list[Message]:
            v = msg.value["v"]
            if v == "poison" or (v == "flaky" and v not in failed):
                failed.add(v)
                raise RuntimeError(v)
            return [Message(out, msg.value)]

        group = f"g-{uuid.uuid4().hex[:8]}"
        proc = TransactionalProcessor(broker, group_id=group, input_topics=[src], transactional_id=f"t-{group}",
                                      handler=handler, max_attempts=2, backoff_s=0.01, batch_size=10)
        stats = proc.run(max_messages=3, idle_timeout_s=10)
        proc.close()
    finally:
        broker.close()
    assert (stats.processed, stats.retries, stats.dead_lettered) == (3, 2, 1)
    g = {"group": group}
    assert value(reader, "distkit.messaging.processor.retries", **g) == 2  # flaky once, poison once (then DLT)
    assert value(reader, "distkit.messaging.processor.dead_lettered", **g) == 1
    assert value(reader, "distkit.messaging.processor.messages", **g) == 3
    assert value(reader, "distkit.messaging.processor.transactions", outcome="aborted", **g) == 3
    assert value(reader, "distkit.messaging.processor.transactions", outcome="committed", **g) == stats.transactions
    assert value(reader, "distkit.messaging.processor.batch.size", **g) == stats.transactions
    assert value(reader, "distkit.messaging.consumer.lag", topic=src, partition=0, **g) == 0  # all 3 consumed


def test_outbox_relay_counts_published_rows(reader: InMemoryMetricReader, pg_engine: Any, kafka_bootstrap: str,
                                            new_topic: Any) -> None:
    from distkit.messaging import KafkaBroker, Outbox, OutboxRelay

    topic = new_topic(1)
    outbox = Outbox(pg_engine, table="m_outbox")
    outbox.create_table()
    with pg_engine.begin() as conn:
        for i in range(2):
            outbox.add(conn, topic=topic, value={"n": i})
    broker = KafkaBroker(kafka_bootstrap, timeout_s=15)
    relay = OutboxRelay(outbox, broker)
    try:
        assert relay.run_once() == 2
    finally:
        relay.close()
        broker.close()
    assert value(reader, "distkit.messaging.outbox.published", table="m_outbox") == 2
    assert value(reader, "distkit.messaging.outbox.dead_lettered", table="m_outbox") == 0


# ------------------------------------------------------------------ saga


def test_saga_transitions_compensations_and_retries(reader: InMemoryMetricReader, pg_engine: Any) -> None:
    from distkit.saga import RetryPolicy, Saga, SagaCoordinator, SagaStatus, SqlSagaLog, Step

    flaky = {"left": 1}

    def debit(ctx: Any) -> dict[str, int]:
        if flaky["left"]:
            flaky["left"] -= 1
            raise RuntimeError("transient")
        return {"charged": 1}

    def refund(ctx: Any) -> None:
        pass

    def create(ctx: Any) -> None:
        raise RuntimeError("rejected")

    name = f"m_order_{uuid.uuid4().hex[:6]}"
    saga = Saga(name, steps=[
        Step("debit", action=debit, compensate=refund, retry=RetryPolicy(max_attempts=3, backoff_s=0.01)),
        Step("create", action=create),
    ])
    with SagaCoordinator(log=SqlSagaLog(pg_engine)) as coord:
        result = coord.run(saga, saga_id=f"s-{uuid.uuid4().hex[:8]}", payload={})
        ok = coord.run(Saga(name + "_ok", steps=[Step("only", action=lambda ctx: 1)]), saga_id=uuid.uuid4().hex)
    assert result.status is SagaStatus.COMPENSATED and ok.status is SagaStatus.COMPLETED
    assert {k: v for k, v in points(reader, "distkit.saga.transitions").items() if ("saga", name) in k} == {
        frozenset({("saga", name), ("status", s)}): 1 for s in ("running", "compensating", "compensated")
    }
    assert value(reader, "distkit.saga.transitions", saga=name + "_ok", status="completed") == 1
    assert value(reader, "distkit.saga.compensations", saga=name, outcome="compensated") == 1
    assert value(reader, "distkit.saga.step.retries", saga=name, step="debit", phase="action") == 1


# ------------------------------------------------------------------ stock


def test_stock_deductions_by_outcome(reader: InMemoryMetricReader, redis_client: Any, namespace: str) -> None:
    from distkit.stock import RedisStock

    stock = RedisStock(redis_client, namespace=namespace)
    stock.load("sku-1", 2)
    assert [stock.try_deduct("sku-1", order_id=o) for o in ("o1", "o1", "o2", "o3")] == [True, True, True, False]
    assert stock.restore("sku-1", "o1") == 1
    assert stock.try_deduct("sku-1", order_id="o1") is False  # restored before: refused
    with pytest.raises(StockNotLoadedError):
        stock.try_deduct("nope", order_id="o1")  # an error, not an outcome
    got = {dict(k)["outcome"]: v for k, v in points(reader, "distkit.stock.deductions").items()}
    assert got == {"deducted": 2, "repeat": 1, "sold_out": 1, "refused": 1}
    assert value(reader, "distkit.stock.restores", strategy="redis") == 1


# ------------------------------------------------------------------ gateway


async def test_gateway_requests_by_service_and_status(reader: InMemoryMetricReader, redis_client: Any,
                                                      namespace: str) -> None:
    from distkit.gateway import Gateway, JwtVerifier, ServiceRegistry

    secret = "s3cret-" * 6
    import jwt

    token = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, secret, algorithm="HS256",
                       headers={"kid": "k"})
    gw = Gateway(ServiceRegistry(redis_client, namespace=namespace), JwtVerifier({"k": secret}, algorithms=["HS256"]),
                 routes={"/orders": "order"})
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://gw") as client:
            codes = [
                (await client.get("/orders/1")).status_code,  # no token
                (await client.get("/orders/1", headers={"authorization": "Bearer bad"})).status_code,
                (await client.get("/nowhere")).status_code,
                (await client.get("/orders/1", headers={"authorization": f"Bearer {token}"})).status_code,
            ]
    finally:
        await gw.aclose()
    assert codes == [401, 401, 404, 503]
    got = points(reader, "distkit.gateway.requests")
    assert got == {
        frozenset({("service", "order"), ("status", 401)}): 2,
        frozenset({("service", "none"), ("status", 404)}): 1,
        frozenset({("service", "order"), ("status", 503)}): 1,
    }
    assert value(reader, "distkit.gateway.request.duration", service="order") == 3


# ------------------------------------------------------------------ idgen


def test_idgen_ids_issued_and_rollback_waits(reader: InMemoryMetricReader) -> None:
    from distkit.idgen import RollbackPolicy, Snowflake

    def issued() -> int:
        return int(value(reader, "distkit.idgen.ids", generator="snowflake"))

    clock = FakeClock()
    before = issued()
    gen = Snowflake(worker_id=3, epoch_ms=clock() - 10_000, clock=clock, rollback=RollbackPolicy.WAIT,
                    max_rollback_wait_ms=5)
    gen.next_id()
    gen.next_id()  # same millisecond
    clock.advance(1)
    gen.next_id()
    gen.next_ids(5000)  # more than one millisecond's 4096
    clock.advance(-3)
    gen.next_id()  # waits the 3 ms out on the fake clock
    assert issued() - before == 3 + 5000 + 1
    assert value(reader, "distkit.idgen.clock_rollbacks", generator="snowflake", action="wait") == 1
    gen.close()


def test_observed_counters_never_go_down_when_their_objects_are_collected(
    reader: InMemoryMetricReader, redis_client: Any, namespace: str
) -> None:
    """distkit.idgen.ids and distkit.cache.requests are read from live objects at collection time; a generator
    or cache that is garbage-collected must not take its count with it (a counter that drops reads as a reset,
    and a new one's increase was hidden by an old one's disappearance)."""
    import gc

    from distkit.cache import HotKeyCache
    from distkit.idgen import Snowflake

    def issued() -> int:
        return int(value(reader, "distkit.idgen.ids", generator="snowflake"))

    def misses() -> int:
        return int(value(reader, "distkit.cache.requests", namespace=namespace, result="miss"))

    before = issued()
    gen = Snowflake(worker_id=4)
    gen.next_ids(7)
    gen.close()
    del gen
    gc.collect()
    again = Snowflake(worker_id=5)
    again.next_ids(2)
    assert issued() - before == 9
    again.close()

    cache = HotKeyCache(redis_client, namespace=namespace, loader=str.upper, backplane=False)
    cache.get("a")
    cache.get("b")
    cache.close()
    del cache
    gc.collect()
    assert misses() == 2
    later = HotKeyCache(redis_client, namespace=namespace, loader=str.upper, backplane=False)
    later.get("c")
    assert misses() == 3
    later.close()


def test_idgen_lease_loss_is_counted_once(reader: InMemoryMetricReader, private_redis: Any, namespace: str) -> None:
    from distkit.errors import WorkerLeaseLostError
    from distkit.idgen import RedisWorkerLease, Snowflake

    client = redis.Redis.from_url(private_redis.url, socket_timeout=0.5)
    gen = Snowflake.from_lease(RedisWorkerLease(client, namespace, max_worker_id=0, ttl_s=1.0))
    gen.next_id()
    private_redis.stop()
    deadline = time.monotonic() + 5
    with pytest.raises(WorkerLeaseLostError):
        while time.monotonic() < deadline:
            gen.next_id()
            time.sleep(0.01)
    gen.close()
    client.close()
    assert value(reader, "distkit.idgen.lease_losses", generator="snowflake") == 1


# ------------------------------------------------------------------ the modules migrated onto the helper


def test_ratelimit_and_resilience_record_through_the_helper(reader: InMemoryMetricReader, redis_client: Any,
                                                            namespace: str) -> None:
    from distkit.ratelimit import FixedWindow, Rate, RedisBackend
    from distkit.resilience import CircuitBreaker

    lim = FixedWindow(Rate(2, per_s=60), backend=RedisBackend(redis_client, prefix=namespace), name="m-login")
    assert [lim.acquire("u").allowed for _ in range(3)] == [True, True, False]
    assert value(reader, "distkit.ratelimit.decisions", limiter="m-login", allowed=True, policy="backend") == 2
    assert value(reader, "distkit.ratelimit.decisions", limiter="m-login", allowed=False, policy="backend") == 1
    name = f"m-{namespace}"
    breaker = CircuitBreaker(name, minimum_calls=2, failure_rate=0.5)

    def boom() -> None:
        raise RuntimeError("down")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            breaker.call(boom)
    assert value(reader, "distkit.resilience.transitions", breaker=name, **{"from": "CLOSED"}, to="OPEN") == 1
    breaker.close()


def test_cache_requests_by_result_and_loads(reader: InMemoryMetricReader, redis_client: Any, namespace: str) -> None:
    from distkit.cache import HotKeyCache

    loads: list[str] = []

    def loader(k: str) -> str:
        loads.append(k)
        return k.upper()

    first = HotKeyCache(redis_client, namespace=namespace, loader=loader)
    second = HotKeyCache(redis_client, namespace=namespace, loader=loader, backplane=False)
    try:
        assert [first.get("a"), first.get("a"), second.get("a")] == ["A", "A", "A"]
        got = {dict(k)["result"]: v for k, v in points(reader, "distkit.cache.requests").items()
               if ("namespace", namespace) in k}
    finally:
        first.close()
        second.close()
    assert loads == ["a"]
    assert got == {"miss": 1, "l1_hit": 1, "l2_hit": 1}
    assert value(reader, "distkit.cache.loads", namespace=namespace) == 1
