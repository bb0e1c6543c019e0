"""The package surface: cheap import, version, CLI, settings, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import distkit
from distkit import errors
from distkit.cli import main as cli_main
from distkit.config import Settings
from distkit.errors import ConfigError, DistkitError


def test_import_is_cheap():
    code = "import sys, distkit; print([m for m in ('redis', 'confluent_kafka', 'sqlalchemy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version_and_cli(capsys):
    assert distkit.__version__.count(".") == 2
    with pytest.raises(SystemExit) as exc:
        cli_main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"distkit {distkit.__version__}"


def test_console_script_version():
    exe = str(__import__("pathlib").Path(sys.executable).parent / "distkit")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"distkit {distkit.__version__}"


def test_settings_from_env_parses_everything():
    s = Settings.from_env(
        {
            "DISTKIT_REDIS_URL": "redis://h:1/0",
            "DISTKIT_REDIS_CLUSTER_NODES": "a:1, b:2,c:3",
            "DISTKIT_DATABASE_URL": "postgresql+psycopg://u@h/db",
            "DISTKIT_KAFKA_BOOTSTRAP": "k:9092",
        }
    )
    assert s.redis_url == "redis://h:1/0"
    assert s.redis_cluster_nodes == (("a", 1), ("b", 2), ("c", 3))
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.kafka_bootstrap == "k:9092"


def test_settings_errors_are_typed():
    with pytest.raises(ConfigError, match="host:port"):
        Settings.from_env({"DISTKIT_REDIS_CLUSTER_NODES": "nohost"})
    with pytest.raises(ConfigError, match="DISTKIT_REDIS_URL is not set"):
        Settings.from_env({}).redis()
    assert issubclass(ConfigError, ValueError)


def test_every_public_error_derives_from_distkit_error():
    public = [
        v
        for k, v in vars(errors).items()
        if isinstance(v, type) and issubclass(v, BaseException) and not k.startswith("_")
    ]
    assert len(public) > 20
    assert all(issubclass(e, DistkitError) for e in public)
