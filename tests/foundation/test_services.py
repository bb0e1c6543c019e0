"""Smoke tests: each real service started by ``make test`` answers over a real connection."""

from __future__ import annotations

import uuid

from distkit._redis import Script, key


def test_redis_set_get_and_evalsha(redis_client, namespace):
    k = key(namespace, "smoke")
    redis_client.set(k, "v", px=60_000)
    assert redis_client.get(k) == b"v"
    sha = redis_client.script_load("return redis.call('GET', KEYS[1])")
    assert redis_client.evalsha(sha, 1, k) == b"v"
    assert 0 < redis_client.pttl(k) <= 60_000


def test_script_reloads_after_flush(redis_client, namespace, tmp_path):
    k = key(namespace, "noscript")
    redis_client.set(k, "x", px=60_000)
    s = _echo_script()
    redis_client.script_flush()
    assert s(redis_client, [k]) == b"x"  # NOSCRIPT -> EVAL fallback
    assert redis_client.script_exists(s.sha) == [True]  # EVAL cached it


def test_script_many_pipelines_and_reloads(redis_client, namespace):
    s = _echo_script()
    keys = [key(namespace, f"k{i}") for i in range(5)]
    for i, k in enumerate(keys):
        redis_client.set(k, str(i), px=60_000)
    redis_client.script_flush()
    assert s.many(redis_client, [([k], []) for k in keys]) == [b"0", b"1", b"2", b"3", b"4"]


def test_cluster_keys_span_three_slots_and_scripts_run(redis_cluster, namespace):
    from redis.cluster import key_slot

    s = _echo_script()
    names = [f"obj{i}" for i in range(64)]
    nodes = set()
    for n in names:
        k = key(namespace, n)
        companion = key(namespace, n, "fence")
        assert key_slot(k.encode()) == key_slot(companion.encode())  # one object, one slot
        redis_cluster.set(k, n, px=60_000)
        assert s(redis_cluster, [k]) == n.encode()
        nodes.add(redis_cluster.get_node_from_key(k).name)
    assert len(nodes) == 3  # the keys really live on all three masters
    assert s.many(redis_cluster, [([key(namespace, n)], []) for n in names[:3]]) == [b"obj0", b"obj1", b"obj2"]


async def test_async_redis_and_script(async_redis_client, namespace):
    k = key(namespace, "async")
    await async_redis_client.set(k, "a", px=60_000)
    s = _echo_script()
    await async_redis_client.script_flush()
    assert await s.acall(async_redis_client, [k]) == b"a"
    assert await s.amany(async_redis_client, [([k], []), ([k], [])]) == [b"a", b"a"]


def test_postgres_round_trip(pg_engine):
    from sqlalchemy import text

    with pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE smoke (id int primary key, v text)"))
        conn.execute(text("INSERT INTO smoke VALUES (1, 'one')"))
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM smoke WHERE id = 1")).scalar_one() == "one"
        assert conn.execute(text("SELECT current_setting('server_version_num')::int")).scalar_one() >= 150000


def test_kafka_transactional_commit_visible_abort_invisible(kafka_bootstrap, new_topic):
    from confluent_kafka import Consumer, Producer

    topic = new_topic()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"smoke-{uuid.uuid4().hex}"})
    producer.init_transactions(15)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction(15)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.flush(15)
    producer.abort_transaction(15)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"end")
    producer.commit_transaction(15)

    def read(isolation: str) -> list[bytes]:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": f"smoke-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "isolation.level": isolation,
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        seen: list[bytes] = []
        try:
            for _ in range(60):
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                seen.append(msg.value())
                if msg.value() == b"end":
                    break
        finally:
            consumer.close()
        return seen

    assert read("read_committed") == [b"committed", b"end"]
    assert read("read_uncommitted") == [b"committed", b"aborted", b"end"]  # the abort was real


def _echo_script() -> Script:
    return Script("_redis", "get_key")
