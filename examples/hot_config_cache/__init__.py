"""Hot configuration cache: 50 readers, an admin saving new versions, one reload per save, never a torn read."""

from examples.hot_config_cache.app import main

__all__ = ["main"]
