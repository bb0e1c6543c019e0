import pytest
import redis


def test_private_redis_stops_and_restarts(private_redis):
    client = redis.Redis.from_url(private_redis.url, socket_timeout=1)
    assert client.ping()
    private_redis.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    private_redis.start()
    assert client.ping()  # redis-py reconnects
