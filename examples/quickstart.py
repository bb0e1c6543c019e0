"""The smallest tour: configuration from the environment and cluster-safe keys, no servers needed."""

from __future__ import annotations

from distkit import __version__
from distkit._redis import key
from distkit.config import Settings


def main() -> None:
    settings = Settings.from_env({"DISTKIT_REDIS_URL": "redis://127.0.0.1:6379/0"})
    print(f"distkit {__version__}; redis at {settings.redis_url}")
    lock_key, fence_key = key("app", "order:42"), key("app", "order:42", "fence")
    print("a lock and its fencing counter share one hash slot:", lock_key, fence_key)
