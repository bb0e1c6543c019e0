"""A closed transactional producer leaves nothing behind: its helper thread ends and the producer (with its
librdkafka handle) can be garbage-collected. Before the fix the thread parked forever in ``get()`` holding the last
call's closure, so every producer a service ever made stayed alive with a thread each."""

from __future__ import annotations

import gc
import threading
import time
import weakref

from distkit.messaging import KafkaBroker
from tests.messaging.conftest import uid


def _txn_threads(tid: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == f"distkit-txn-{tid}"[:60]]


def _gone_within(pred, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_closing_the_broker_ends_each_producer_thread_and_frees_the_producer(kafka_bootstrap, new_topic):
    topic = new_topic()
    broker = KafkaBroker(kafka_bootstrap)
    tids = [uid("txn"), uid("txn")]
    refs = []
    for tid in tids:
        producer = broker.transactional_producer(tid)
        with producer as tx:
            tx.send(topic, {"tid": tid})
        assert len(_txn_threads(tid)) == 1
        refs.append(weakref.ref(producer))
    del producer, tx
    broker.close()
    assert _gone_within(lambda: all(_txn_threads(tid) == [] for tid in tids), 5.0)
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_a_closed_producer_still_commits_and_its_thread_still_ends(kafka_bootstrap, new_topic):
    topic = new_topic()
    broker = KafkaBroker(kafka_bootstrap)
    tid = uid("txn")
    producer = broker.new_transactional_producer(tid)
    producer.close()
    assert _gone_within(lambda: _txn_threads(tid) == [], 5.0)
    with producer as tx:  # begin/send/commit still work (the helper thread restarts only if a call needs it)
        tx.send(topic, {"n": 1})
    producer.close()
    broker.close()
    assert _gone_within(lambda: _txn_threads(tid) == [], 5.0)


def test_replaced_producers_end_their_threads_too(kafka_bootstrap, new_topic):
    """A producer replaced under its id -- fenced by a new instance (``new_transactional_producer``), or found
    broken and re-made by ``transactional_producer`` -- used to drop out of the broker's books still running its
    helper thread, which ``broker.close()`` then never stopped (a service that replaces producers leaked one
    thread per replacement)."""
    from distkit.errors import ProducerFencedError

    topic = new_topic()
    broker = KafkaBroker(kafka_bootstrap)
    tid = uid("txn")
    zombie = broker.transactional_producer(tid)
    with zombie as tx:
        tx.send(topic, {"n": 1})
    successor = broker.new_transactional_producer(tid)  # fences the zombie; the caller may still hold it
    try:
        with zombie as tx:
            tx.send(topic, {"n": 2})
    except ProducerFencedError:
        pass
    assert not zombie.usable
    again = broker.transactional_producer(tid)  # the successor is usable: the same object back
    assert again is successor
    broker.close()
    assert _gone_within(lambda: _txn_threads(tid) == [], 5.0), _txn_threads(tid)
