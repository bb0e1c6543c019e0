"""Issue 16 §3: ``Settings`` never shows a secret: repr, str, f-strings, and ``ConfigError`` messages."""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from distkit.config import Settings, redact
from distkit.errors import ConfigError

PASSWORDS = ["s3cret", "p@ss", "a:b", "p@ss:w@rd", "пароль🔑", "pa/ss?#x", "", "@", ":", "x@y:z/w", " spaced pw "]
# hypothesis: any text at all, plus the characters that break naive URL parsing, plus non-ASCII
password = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40) | st.text(
    alphabet="@:/?#%&=;[] .é密", max_size=12
)


# the whole message, with nothing from the entry in it but its position
MESSAGE = re.compile(
    r"DISTKIT_REDIS_CLUSTER_NODES: entry \d+ of \d+ is not host:port: "
    r"(a URL or credentials; give host:port only and pass a password as redis_cluster\(password=\.\.\.\)"
    r"|no host:port|the port is not a number) "
    r"\(expected host:port\[,host:port\.\.\.\]; the entry is not shown, it may hold a secret\)"
)


def _shown(s: Settings) -> list[str]:
    return [repr(s), str(s), f"{s}", f"{s!r}", format(s), "%s" % (s,), "%r" % (s,)]  # noqa: UP031


def _secret_visible(secret: str, text: str) -> bool:
    return len(secret) >= 3 and secret in text.replace("app", "").replace("cache", "").replace("redis", "")


@pytest.mark.parametrize("pw", PASSWORDS)
@pytest.mark.parametrize("encode", [False, True])
def test_redis_and_database_urls_are_redacted_everywhere(pw, encode):
    secret = quote(pw, safe="") if encode else pw
    s = Settings(
        redis_url=f"redis://app:{secret}@cache:6379/0",
        database_url=f"postgresql+psycopg://app:{secret}@db.internal:5432/app",
        kafka_bootstrap="k1:9092,k2:9092",
    )
    for text in _shown(s):
        assert "redis://app:***@cache:6379/0" in text
        assert "postgresql+psycopg://app:***@db.internal:5432/app" in text
        assert "k1:9092,k2:9092" in text
        assert not _secret_visible(secret, text), text
    assert s.redis_url == f"redis://app:{secret}@cache:6379/0"  # the real value is still there to connect with


@settings(max_examples=300, deadline=None)
@given(pw=password, user=st.sampled_from(["", "app", "default"]), encode=st.booleans())
@example(pw="p@ss:w@rd", user="app", encode=False)
@example(pw="пароль🔑", user="", encode=False)
def test_redact_hides_any_password_whole(pw, user, encode):
    secret = quote(pw, safe="") if encode else pw
    for scheme, rest in [("redis://", "cache:6379/0"), ("rediss://", "10.0.0.5:6380"), ("postgresql://", "db/app")]:
        assert redact(f"{scheme}{user}:{secret}@{rest}") == f"{scheme}{user}:***@{rest}"
    logged = f"{Settings(redis_url=f'redis://{user}:{secret}@cache:6379/0')}"
    assert f"'redis://{user}:***@cache:6379/0'" in logged


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://cache:6379/0", "redis://cache:6379/0"),  # nothing to hide: unchanged
        ("redis://app@cache:6379", "redis://app@cache:6379"),  # a user name alone is not a secret
        ("redis://:only-pw@cache", "redis://:***@cache"),
        ("redis://cache:6379/0?password=hunter22&db=1", "redis://cache:6379/0?password=***&db=1"),
        ("postgresql://u@db/app?sslpassword=k3y", "postgresql://u@db/app?sslpassword=***"),
        ("unix:///run/redis.sock?password=hunter22", "unix:///run/redis.sock?password=***"),
        ("app:pw@host:7000", "app:***@host:7000"),
    ],
)
def test_redact_cases(url, shown):
    assert redact(url) == shown


@pytest.mark.parametrize("pw", PASSWORDS[:6])
def test_malformed_cluster_entry_is_named_but_its_secret_is_not_echoed(pw):
    raw = f"10.0.0.5:7000, redis://app:{pw}@10.0.0.6:7000 ,10.0.0.7:7000"
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"DISTKIT_REDIS_CLUSTER_NODES": raw})
    msg = str(exc.value)
    assert msg.startswith("DISTKIT_REDIS_CLUSTER_NODES: entry 2 of 3 is not host:port: a URL or credentials")
    assert "redis_cluster(password=...)" in msg
    assert MESSAGE.fullmatch(msg), msg
    with pytest.raises(ConfigError, match=r"entry 1 of 1 is not host:port"):
        Settings.from_env({"DISTKIT_REDIS_CLUSTER_NODES": f"app:{pw}@10.0.0.6:7000"})


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("nohost", "no host:port"), (":7000", "no host:port"), ("h:port", "the port is not a number"),
     ("a:1,b:hunter22", "the port is not a number"), ("redis://h:1", "a URL or credentials")],
)
def test_malformed_cluster_entries_say_why_without_echoing(raw, reason):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"DISTKIT_REDIS_CLUSTER_NODES": raw})
    assert reason in str(exc.value) and MESSAGE.fullmatch(str(exc.value))
    assert "hunter22" not in str(exc.value) and "port'" not in str(exc.value)


@settings(max_examples=300, deadline=None)
@given(pw=password, user=st.sampled_from(["", "app"]))
@example(pw="abc,defgh:xyz", user="app")  # a comma splits the password into entries of their own
def test_no_cluster_entry_error_ever_contains_any_piece_of_the_password(pw, user):
    raw = f"a:1,{user}:{pw}@b:2,c:3"
    try:
        s = Settings.from_env({"DISTKIT_REDIS_CLUSTER_NODES": raw})
    except ConfigError as exc:
        assert MESSAGE.fullmatch(str(exc)), str(exc)  # fixed text and two counts: nothing of the input
    else:
        raise AssertionError(f"accepted {s.redis_cluster_nodes}")  # the '@' entry is never a valid node


def test_good_cluster_nodes_still_parse():
    s = Settings.from_env({"DISTKIT_REDIS_CLUSTER_NODES": " a:1, b:2 ,c:3,"})
    assert s.redis_cluster_nodes == (("a", 1), ("b", 2), ("c", 3))
    assert "redis_cluster_nodes=(('a', 1), ('b', 2), ('c', 3))" in repr(s)


def test_logging_a_settings_object_shows_no_password(caplog):
    s = Settings(redis_url="redis://app:Tr0ub4dor&3@cache:6379/0")
    with caplog.at_level(logging.INFO, logger="distkit.test"):
        logging.getLogger("distkit.test").info("starting with %s", s)
        logging.getLogger("distkit.test").info("starting with %r", s)
    assert "Tr0ub4dor" not in caplog.text and caplog.text.count("redis://app:***@cache:6379/0") == 2
