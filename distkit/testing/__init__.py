"""Test helpers for applications built on distkit, and a pytest plugin that provides their backing services.

* :class:`FakeClock`: a hand-driven millisecond clock for every ``clock=`` parameter.
* :mod:`distkit.testing.plugin`: pytest fixtures (``distkit_redis``, ``distkit_pg_engine``, ``distkit_new_topic``,
  ``distkit_broker``, ``distkit_fake_clock`` ...), registered through the ``pytest11`` entry point.
* :mod:`distkit.testing.services`: local Redis / Redis Cluster / PostgreSQL / Kafka servers without Docker.

Importing this package loads neither pytest nor any client library (standard library only).
"""

from distkit.testing.clock import FakeClock

__all__ = ["FakeClock"]
