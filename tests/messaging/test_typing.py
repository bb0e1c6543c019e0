"""Issue 16 §5: ``InMemoryBroker`` and ``KafkaBroker`` satisfy the ``Broker`` protocol under ``mypy --strict``."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_both_brokers_pass_for_the_broker_protocol_under_mypy_strict(tmp_path):
    api = pytest.importorskip("mypy.api")
    out, err, status = api.run(
        [
            "--strict",
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(ROOT / "tests" / "messaging" / "typed_usage.py"),
        ]
    )
    assert status == 0, out + err
