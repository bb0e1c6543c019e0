"""Kafka-only behaviour: unreachable broker, unknown topics, SIGTERM shutdown of a processor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from distkit.errors import BrokerUnavailableError, UnknownTopicError
from distkit.messaging import KafkaBroker
from tests.messaging.conftest import drain, uid

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_broker_down_at_start_raises_after_a_bounded_wait():
    broker = KafkaBroker(f"127.0.0.1:{closed_port()}", timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="did not answer within 2"):
        broker.transactional_producer("nobody-home")
    with pytest.raises(BrokerUnavailableError):
        broker.consumer("g", ["t"])
    assert time.monotonic() - t0 < 15


def test_unknown_topic_with_auto_create_off_is_a_clear_error(kafka_bootstrap, new_topic):
    broker = KafkaBroker(kafka_bootstrap, auto_create_topics=False, timeout_s=10)
    missing = uid("nope")
    tx = broker.transactional_producer(uid("tx"))
    with pytest.raises(UnknownTopicError, match="does not exist"), tx:
        tx.send(missing, {"x": 1})
    with pytest.raises(UnknownTopicError):
        broker.consumer("g", [missing])
    existing = new_topic()
    with tx:
        tx.send(existing, {"x": 1})
    assert [m.value for m in drain(broker, [existing], expect=1, quiet_s=0.2)] == [{"x": 1}]
    broker.close()


def test_sigterm_finishes_the_current_transaction_and_exits_cleanly(kafka_bootstrap, new_topic):
    src, out = new_topic(), new_topic()
    broker = KafkaBroker(kafka_bootstrap, timeout_s=15)
    with broker.transactional_producer(uid("tx")) as tx:
        for i in range(200):
            tx.send(src, {"n": i})
    group = uid("g")
    script = textwrap.dedent(f"""
        import sys, time
        from distkit.messaging import KafkaBroker, Message, TransactionalProcessor
        def handler(msg):
            time.sleep(0.02)  # slow enough that SIGTERM lands mid-stream
            if msg.value["n"] == 5:
                print("working", flush=True)
            return [Message(topic={out!r}, value=msg.value)]
        proc = TransactionalProcessor(KafkaBroker({kafka_bootstrap!r}), group_id={group!r},
                                      input_topics=[{src!r}], transactional_id={uid("p")!r}, handler=handler,
                                      batch_size=10)
        stats = proc.run()
        proc.close()
        print("stopped", stats.processed, flush=True)
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "working"
    child.send_signal(signal.SIGTERM)
    rest, _ = child.communicate(timeout=60)  # bounded: a hung child fails the test instead of hanging it
    assert child.returncode == 0
    processed = int(rest.split()[-1])
    assert 0 < processed < 200 and processed % 10 == 0  # stopped between whole transactions
    outputs = drain(broker, [out], expect=processed)
    assert sorted(m.value["n"] for m in outputs) == list(range(processed))
    # the committed input offsets match the outputs exactly: the group resumes at `processed`
    resumed = broker.consumer(group, [src])
    first = resumed.poll_iter(timeout_s=0.5, max_messages=1)
    assert next(first).value == {"n": processed}
    resumed.close()
    broker.close()


class _HangingSendOffsets:
    """librdkafka's send_offsets_to_transaction ignoring its timeout (librdkafka #5456), reproduced."""

    def __init__(self, rd: object, release: threading.Event) -> None:
        self._rd, self._release = rd, release

    def __getattr__(self, name: str) -> object:
        return getattr(self._rd, name)

    def send_offsets_to_transaction(self, *args: object) -> None:
        self._release.wait(60)


def test_a_hung_send_offsets_is_abandoned_after_timeout_and_the_producer_replaced(kafka_bootstrap, new_topic):
    src = new_topic()
    broker = KafkaBroker(kafka_bootstrap, timeout_s=1.5)
    release = threading.Event()
    tx = broker.transactional_producer(uid("hang"))
    consumer = broker.consumer(uid("g"), [src])
    tx._rd = _HangingSendOffsets(tx._rd, release)  # type: ignore[assignment]
    try:
        tx.begin()
        t0 = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match="did not return within 1.5"):
            tx.send_offsets(consumer, {(src, 0): 0})
        assert time.monotonic() - t0 < 1.5 + 2 + 2  # timeout + grace, not forever
        assert not tx.usable
        with pytest.raises(BrokerUnavailableError, match="unusable"):
            tx.begin()
        fresh = broker.transactional_producer(tx.transactional_id)  # a new instance, fencing the hung one
        assert fresh is not tx and fresh.usable
        with fresh:
            fresh.send(src, {"ok": 1})
    finally:
        release.set()
        consumer.close()
    assert [m.value for m in drain(broker, [src], expect=1, quiet_s=0.2)] == [{"ok": 1}]
    broker.close()


def test_abort_soon_after_a_commit_never_kills_the_producer(kafka_bootstrap, new_topic):
    """librdkafka #4849: aborting while the transaction's partition registration is in flight failed fatally
    (INVALID_TXN_STATE) in 7-33 of these 200 aborts before ``abort()`` waited for the acks; now 0."""
    import random

    topic = new_topic(2)
    broker = KafkaBroker(kafka_bootstrap, timeout_s=10)
    tids = [uid("abort") for _ in range(8)]
    producers = {tid: broker.transactional_producer(tid) for tid in tids}
    failures: list[Exception] = []

    def work(tid: str) -> None:
        for i in range(25):
            tx = broker.transactional_producer(tid)
            with tx:
                tx.send(topic, {"kept": f"{tid}-{i}"})
            tx.begin()
            tx.send(topic, {"dropped": f"{tid}-{i}"})
            time.sleep(random.random() * 0.003)
            try:
                tx.abort()
            except Exception as exc:  # counted, asserted below
                failures.append(exc)

    threads = [threading.Thread(target=work, args=(tid,)) for tid in tids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert all(broker.transactional_producer(tid) is producers[tid] for tid in tids)  # none was replaced
    got = drain(broker, [topic], expect=200, quiet_s=0.5)
    assert sorted(m.value["kept"] for m in got) == sorted(f"{tid}-{i}" for tid in tids for i in range(25))
    broker.close()
