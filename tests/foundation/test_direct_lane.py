"""The direct lane (distkit._redis.direct) against real Redis: same replies as redis-py, NOSCRIPT, dead
connections, outages, threads, fork, and the asyncio twin; its connections are the client pool's."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
import redis
import redis.asyncio as aredis

from distkit._redis.direct import AsyncDirectLane, DirectLane
from distkit.errors import BackendUnavailableError

ECHO = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1, redis.call('GET', KEYS[1]), redis.status_reply('OK')}"
COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL_ODD = "if tonumber(ARGV[1]) % 2 == 1 then return redis.error_reply('ODD ' .. ARGV[1]) end return ARGV[1]"


class InlineScript:
    """The lane needs a script's ``sha`` and ``source`` only (``distkit._redis.Script`` reads them from files)."""

    def __init__(self, source: str) -> None:
        self.name, self.source = "test", source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def lane_for(client):
    lane = DirectLane.for_client(client)
    assert lane is not None
    return lane


def test_only_plain_clients_get_a_lane(redis_url, redis_cluster):
    import fakeredis

    assert DirectLane.for_client(redis.Redis.from_url(redis_url)) is not None
    assert DirectLane.for_client(redis.Redis.from_url(redis_url, single_connection_client=True)) is None
    assert DirectLane.for_client(fakeredis.FakeRedis()) is None
    assert DirectLane.for_client(redis_cluster) is None
    assert AsyncDirectLane.for_client(aredis.Redis.from_url(redis_url)) is not None
    assert AsyncDirectLane.for_client(redis.Redis.from_url(redis_url)) is None


@pytest.mark.parametrize("decode", [False, True])
def test_replies_are_exactly_what_redis_py_returns(redis_url, namespace, decode):
    client = redis.Redis.from_url(redis_url, decode_responses=decode)
    k = f"{{{namespace}}}:echo:é"
    client.set(k, "stored")
    script = InlineScript(ECHO)
    via_lane = lane_for(client).call(script, [k], ["ünïcode", 41])
    assert via_lane == client.eval(ECHO, 1, k, "ünïcode", 41)
    assert via_lane[2] == 42 and via_lane[0] == (k if decode else k.encode())
    client.delete(k)


def test_arguments_are_encoded_like_redis_py_and_bad_ones_refused(redis_client):
    lane = lane_for(redis_client)
    echo = InlineScript("return ARGV")
    args = ["é", b"\x00\xff", 7, 2.5, bytearray(b"ba"), memoryview(b"mv"), 1, 1.0]
    assert lane.call(echo, [], args) == redis_client.eval("return ARGV", 0, *args)
    for bad in (True, None, [1], {"a": 1}):
        with pytest.raises(redis.DataError):
            lane.call(echo, [], [bad])
    assert lane.call(echo, [], [1]) == [b"1"]  # a refused argument sent nothing: the connection is in step


def test_noscript_is_answered_by_eval_and_each_call_runs_once(redis_client, namespace):
    lane, script = lane_for(redis_client), InlineScript(COUNT)
    k = f"{{{namespace}}}:count"
    redis_client.script_flush()
    assert lane.call(script, [k], [1]) == 1  # NOSCRIPT -> EVAL
    redis_client.script_flush()
    assert lane.call_many(script, [([k], [1])] * 10) == list(range(2, 12))  # NOSCRIPT for all -> resent once
    assert lane.call_many(script, [([k], [1])] * 5) == list(range(12, 17))  # cached now: one round trip
    assert int(redis_client.get(k)) == 16


def test_error_replies_of_a_batch_come_back_in_place(redis_client):
    lane = lane_for(redis_client)
    replies = lane.call_many(InlineScript(FAIL_ODD), [([], [i]) for i in range(6)])
    assert [r for r in replies if not isinstance(r, Exception)] == [b"0", b"2", b"4"]
    errors = [r for r in replies if isinstance(r, Exception)]
    assert [str(e) for e in errors] == ["ODD 1", "ODD 3", "ODD 5"]
    assert all(isinstance(e, redis.ResponseError) for e in errors)
    with pytest.raises(redis.ResponseError, match="ODD 7"):
        lane.call(InlineScript(FAIL_ODD), [], [7])
    assert lane.call(InlineScript(FAIL_ODD), [], [8]) == b"8"  # the connection is still in step


def _observer(url):
    return redis.Redis.from_url(url, client_name="observer")


def test_a_killed_idle_connection_is_replaced_and_the_script_runs_once(private_redis):
    client = redis.Redis.from_url(private_redis.url)  # from_url: no retries at all
    lane, script = lane_for(client), InlineScript(COUNT)
    assert lane.call(script, ["n"], [1]) == 1
    observer = _observer(private_redis.url)
    assert observer.client_kill_filter(_type="normal", skipme=True) == 1  # the pool's idle connection
    assert lane.call(script, ["n"], [1]) == 2  # seen closed before sending: reconnected, not resent
    assert int(observer.get("n")) == 2
    observer.close()
    client.close()


def test_a_restarted_server_is_seen_before_sending_however_many_connections_were_idle(private_redis):
    client = redis.Redis.from_url(private_redis.url)
    pool = client.connection_pool
    lane, script = lane_for(client), InlineScript(COUNT)
    assert lane.call(script, ["n"], [1]) == 1
    held = [pool.get_connection() for _ in range(4)]  # as after a burst of concurrent calls: several idle
    for conn in held:
        pool.release(conn)
    private_redis.stop()
    private_redis.start()
    assert lane.call(script, ["n"], [1]) == 1  # a fresh server, no error: the dead socket was never written
    assert lane.breaker.failures == 0
    client.close()


def test_redis_down_raises_unavailable_then_recovers(private_redis):
    client = redis.Redis.from_url(private_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    lane, script = lane_for(client), InlineScript(COUNT)
    assert lane.call(script, ["n"], [1]) == 1
    private_redis.stop()
    with pytest.raises(BackendUnavailableError) as info:
        lane.call(script, ["n"], [1])
    assert isinstance(info.value, redis.ConnectionError) and info.value.__cause__ is not None
    with pytest.raises(BackendUnavailableError):
        lane.call_many(script, [(["n"], [1])])
    private_redis.start()
    lane.breaker.succeeded()  # do not wait for the breaker's interval here (tests/foundation/test_call_policy.py)
    assert lane.call(script, ["n"], [5]) == 5  # a fresh server (no persistence): counted from zero, once
    client.close()


def test_threads_never_share_a_connection(redis_client, namespace):
    lane, script = lane_for(redis_client), InlineScript(COUNT)
    k = f"{{{namespace}}}:threads"
    start = threading.Barrier(16)
    replies: list[int] = []

    def work() -> None:
        start.wait()
        replies.extend(lane.call(script, [k], [1]) for _ in range(200))

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(replies) == list(range(1, 3201))  # every reply belongs to its own call
    assert int(redis_client.get(k)) == 3200
    pool = redis_client.connection_pool
    assert not pool._in_use_connections  # every connection went back to the client's pool
    assert len(pool._available_connections) in range(1, 17)  # one connection per concurrent caller at most


def test_a_forked_child_uses_its_own_connections(redis_client, namespace):
    lane, script = lane_for(redis_client), InlineScript(COUNT)
    k = f"{{{namespace}}}:fork"
    pool = redis_client.connection_pool
    assert lane.call(script, [k], [1]) == 1
    parent_conn = pool._available_connections[0]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the pool resets itself; a new connection answers
        code = 1
        try:
            ok = lane.call(script, [k], [10]) == 11 and pool._available_connections[0] is not parent_conn
            os.write(write_fd, b"ok" if ok else b"bad")
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    assert os.read(read_fd, 10) == b"ok"
    os.waitpid(pid, 0)
    assert lane.call(script, [k], [100]) == 111  # the parent's socket was not shut down by the child
    assert pool._available_connections[0] is parent_conn


async def test_async_lane_same_semantics(async_redis_client, namespace):
    lane = AsyncDirectLane.for_client(async_redis_client)
    assert lane is not None
    script = InlineScript(COUNT)
    k = f"{{{namespace}}}:async"
    await async_redis_client.script_flush()
    assert await lane.call(script, [k], [1]) == 1
    await async_redis_client.script_flush()
    assert await lane.call_many(script, [([k], [1])] * 4) == [2, 3, 4, 5]
    replies = await lane.call_many(InlineScript(FAIL_ODD), [([], [i]) for i in range(3)])
    assert replies[0] == b"0" and isinstance(replies[1], redis.ResponseError) and replies[2] == b"2"
    pool = async_redis_client.connection_pool
    assert not pool._in_use_connections and len(pool._available_connections) == 1  # the client's own pool


async def test_async_lane_redis_down_then_back(private_redis):
    client = aredis.Redis.from_url(private_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    lane = AsyncDirectLane.for_client(client)
    assert lane is not None
    script = InlineScript(COUNT)
    assert await lane.call(script, ["n"], [1]) == 1
    private_redis.stop()
    with pytest.raises(BackendUnavailableError):
        await lane.call(script, ["n"], [1])
    private_redis.start()
    lane.breaker.succeeded()
    assert await lane.call(script, ["n"], [2]) == 2
    await client.aclose()


def test_blocking_pools_get_the_lane_too(redis_url):
    assert DirectLane.for_client(redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(redis_url)))
    apool = aredis.BlockingConnectionPool.from_url(redis_url)
    assert AsyncDirectLane.for_client(aredis.Redis(connection_pool=apool))
    assert DirectLane.for_client(redis.Redis.from_url(redis_url, protocol=3)) is None  # RESP3 pushes: own path
