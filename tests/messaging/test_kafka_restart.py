"""Issue 15 item 11: a broker restart, on a PRIVATE single-node KRaft broker this test starts (the shared
Kafka is never touched). One outage, two processors with a batch in flight: one rides it out, the other
(short ``outage_timeout_s``) raises within its documented bound and then resumes; each input gets exactly
one output on both, and the broker comes back with its data (``infra/services.py`` keeps it)."""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from distkit.errors import MessagingError
from distkit.messaging import KafkaBroker, Message, TransactionalProcessor
from tests.messaging.conftest import drain, uid

ROOT = Path(__file__).resolve().parents[2]
BROKER_TIMEOUT_S = 3.0


def services() -> Any:
    spec = importlib.util.spec_from_file_location("distkit_services", ROOT / "infra" / "services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_kafka(tmp_path: Path, kafka_bootstrap: str) -> Any:  # kafka_bootstrap: only where Kafka tests run
    svc = services()
    if not any(Path(svc.KAFKA_LIBS).glob("kafka_2.13-*.jar")):
        pytest.skip(f"no Kafka jars under {svc.KAFKA_LIBS} (run `python infra/services.py start kafka` once)")
    node = {"svc": svc, "dir": tmp_path / "kafka", "port": free_port(), "cport": free_port()}
    svc.start_kafka_node(node["dir"], node["port"], node["cport"], timeout_s=150)
    yield node
    svc.stop_kafka_node(node["dir"], timeout_s=15)


class Gate:
    """The handler blocks on the first input until the broker is down: a batch is in flight."""

    def __init__(self) -> None:
        self.reached, self.go = threading.Event(), threading.Event()

    def handler(self, out: str) -> Any:
        def handle(m: Message) -> list[Message]:
            if not self.reached.is_set():
                self.reached.set()
                assert self.go.wait(120)
            return [Message(topic=out, key=m.key, value=m.value)]

        return handle


def run_in_thread(proc: TransactionalProcessor, n: int, result: dict[str, Any]) -> threading.Thread:
    def target() -> None:
        t0 = time.monotonic()
        try:
            result["stats"] = proc.run(max_messages=n, handle_signals=False)
        except BaseException as exc:  # handed to the test
            result["error"] = exc
        result["end"] = time.monotonic()
        result["elapsed"] = result["end"] - t0

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_processor_rides_out_a_broker_restart_or_raises_within_its_bound(private_kafka):
    svc, d = private_kafka["svc"], private_kafka["dir"]
    bootstrap = f"127.0.0.1:{private_kafka['port']}"
    # log_level 0: the producers abandoned during the outage (by design) would log reconnect failures to
    # stderr for the rest of the test session
    broker = KafkaBroker(bootstrap, timeout_s=BROKER_TIMEOUT_S, config={"log_level": 0})
    src, out_ride, out_bound = uid("src"), uid("ride"), uid("bound")
    for t in (src, out_ride, out_bound):
        broker.create_topic(t, 2 if t == src else 1)
    n = 30
    with broker.transactional_producer(uid("seed")) as tx:
        for i in range(n):
            tx.send(src, {"n": i}, key=str(i))
    gates = {"ride": Gate(), "bound": Gate()}
    procs = {
        name: TransactionalProcessor(
            broker,
            group_id=uid(name),
            input_topics=[src],
            transactional_id=uid(name),
            handler=gates[name].handler(out),
            batch_size=5,
            backoff_s=0.2,
            max_backoff_s=1.0,
            outage_timeout_s=120 if name == "ride" else 3,
        )
        for name, out in (("ride", out_ride), ("bound", out_bound))
    }
    results: dict[str, dict[str, Any]] = {"ride": {}, "bound": {}}
    threads = {name: run_in_thread(procs[name], n, results[name]) for name in procs}
    for g in gates.values():
        assert g.reached.wait(60)

    svc.stop_kafka_node(d, timeout_s=20)  # a clean broker shutdown, data kept
    down_at = time.monotonic()
    for g in gates.values():
        g.go.set()  # both now try to produce / send_offsets / commit against a dead broker
    threads["bound"].join(60)
    assert not threads["bound"].is_alive(), "run() hung during the outage"
    bound = results["bound"]
    assert isinstance(bound.get("error"), MessagingError), bound
    # documented bound: outage_timeout_s + 3 * the broker's timeout_s (each call is bounded), plus slack
    assert bound["end"] - down_at <= 3 + 3 * BROKER_TIMEOUT_S + 10, bound["end"] - down_at
    assert threads["ride"].is_alive()  # still riding it out

    svc.start_kafka_node(d, private_kafka["port"], private_kafka["cport"], timeout_s=150)  # same data
    threads["ride"].join(150)
    assert not threads["ride"].is_alive() and "error" not in results["ride"], results["ride"]
    assert results["ride"]["stats"].processed == n
    again = procs["bound"].run(idle_timeout_s=1.5, handle_signals=False)  # resumes from the committed offsets
    assert again.processed >= 0
    for p in procs.values():
        p.close()
    for out in (out_ride, out_bound):
        counts = Counter(m.value["n"] for m in drain(broker, [out], expect=n, timeout_s=60))
        assert sorted(counts) == list(range(n)) and set(counts.values()) == {1}, (out, counts)
    # the restarted broker kept its data: the seed topic still holds every input
    assert len(drain(broker, [src], expect=n, timeout_s=60, quiet_s=0.2)) == n
    broker.close()
