"""Issue 16 §2: installable and importable as the README says.

* without extras the in-memory parts import and work, and a name that needs an extra raises ``ImportError``
  naming it (``pip install 'distkit[redis]'``), first simulated in this venv, then for real: the wheel built
  from this checkout, installed with no dependencies into a fresh venv that cannot see this one;
* the wheel ships the Apache-2.0 ``LICENSE``; ``python -m distkit`` works;
* the CLI: every option has help; bad input is one line on stderr and exit code 2, never a traceback;
* the ``distkit`` logger has a ``NullHandler``: distkit warnings stay silent until the application configures
  logging.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import distkit
from distkit._extras import EXTRA_FOR_MODULE, EXTRAS, MissingExtraError, require
from distkit.cli import build_parser
from distkit.errors import DistkitError

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("no_extras_probe.py")
CLIENT_LIBS = sorted(EXTRA_FOR_MODULE)  # redis, confluent_kafka, sqlalchemy, psycopg, opentelemetry

EXPECTED_EXTRA = {
    "distkit.locks.Locks": "redis",
    "distkit.locks.AsyncLocks": "redis",
    "distkit.locks.Lock": "redis",
    "distkit.locks.Semaphore": "redis",
    "distkit.locks.ReadWriteLock": "redis",
    "distkit.ratelimit.RedisBackend": "redis",
    "distkit.ratelimit.AsyncRedisBackend": "redis",
    "distkit.idempotency.RedisIdempotencyStore": "redis",
    "distkit.idempotency.SqlIdempotencyStore": "sql",
    "distkit.idempotency.Inbox": "sql",
    "distkit.idgen.RedisWorkerLease": "redis",
    "distkit.idgen.SqlWorkerLease": "sql",
    "distkit.messaging.KafkaBroker": "kafka",
    "distkit.messaging.Outbox": "sql",
    "distkit.messaging.OutboxRelay": "sql",
    "Settings.redis": "redis",
    "Settings.async_redis": "redis",
    "Settings.sql_engine": "sql",
}


def _check_probe(out: dict) -> None:
    assert out["imported"] == ["distkit.idempotency", "distkit.idgen", "distkit.locks", "distkit.messaging",
                               "distkit.ratelimit"]
    assert out["decisions"] == [True, True, False]  # burst 2: two allowed, the third refused
    assert out["messages"] == [{"order_id": 1}]
    assert out["worker_id"] == 3
    assert out["heavy_loaded"] == []
    assert set(out["errors"]) == set(EXPECTED_EXTRA)
    for name, extra in EXPECTED_EXTRA.items():
        kind, message, is_import_error = out["errors"][name]
        assert kind == "MissingExtraError", name
        assert is_import_error == "True"
        assert message.endswith(f"needs the {extra!r} extra: pip install 'distkit[{extra}]'"), message


def test_without_client_libraries_in_memory_parts_work_and_names_say_which_extra():
    res = subprocess.run([sys.executable, str(PROBE), *CLIENT_LIBS], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    _check_probe(json.loads(res.stdout))


def test_names_resolve_normally_with_the_extras_installed():
    from distkit.locks import Locks
    from distkit.messaging import KafkaBroker
    from distkit.ratelimit import RedisBackend

    assert Locks.__module__ == "distkit.locks.lock"
    assert RedisBackend.__module__ == "distkit.ratelimit.backends"
    assert KafkaBroker.__name__ == "KafkaBroker"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import distkit.locks

        _ = distkit.locks.Nope  # type: ignore[attr-defined]


def test_missing_extra_error_is_an_import_error_and_a_distkit_error():
    err = MissingExtraError("distkit.tracing.instrument", "otel")
    assert isinstance(err, ImportError) and isinstance(err, DistkitError)
    assert str(err) == "distkit.tracing.instrument needs the 'otel' extra: pip install 'distkit[otel]'"
    assert set(EXTRA_FOR_MODULE.values()) == set(EXTRAS) == {"redis", "kafka", "sql", "otel"}
    require("redis", "x")  # installed here: no error
    with pytest.raises(MissingExtraError, match=r"pip install 'distkit\[nope\]'"):
        EXTRA_FOR_MODULE["distkit_no_such_module_for_test"] = "nope"
        try:
            require("nope", "x")
        finally:
            del EXTRA_FOR_MODULE["distkit_no_such_module_for_test"]


def test_pyproject_extras_match_the_error_messages():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert extras["redis"][0].startswith("redis") and extras["kafka"][0].startswith("confluent-kafka")
    assert {d.split(">")[0].split("[")[0] for d in extras["sql"]} == {"sqlalchemy", "psycopg"}
    assert extras["otel"][0].startswith("opentelemetry-api")


@pytest.mark.slow
def test_wheel_installs_and_works_without_extras(tmp_path):
    """The wheel of this checkout, installed with ``--no-deps --no-index`` into a fresh venv that cannot see
    the dev venv's site-packages: the probe runs there with nothing blocked, because nothing is installed."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, text=True, timeout=120)
    (wheel,) = wheels.glob("distkit-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        license_name = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        license_text = zf.read(license_name).decode()
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    shipped = {"distkit/__main__.py", "distkit/py.typed", "distkit/_extras.py", "distkit/locks/lua/lock_acquire.lua"}
    assert shipped <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    run = lambda *args: subprocess.run([str(py), "-I", *args], capture_output=True, text=True, timeout=60,  # noqa: E731
                                       cwd=tmp_path, env=env)

    code = (f"import importlib.util as u, distkit; print(distkit.__file__); "
            f"print([m for m in {CLIENT_LIBS!r} if u.find_spec(m)])")
    isolated = run("-c", code)
    assert isolated.returncode == 0, isolated.stderr
    where, found = isolated.stdout.splitlines()
    assert where.startswith(str(venv)) and found == "[]"  # the wheel's distkit, and no client library at all

    probe = run(str(PROBE))
    assert probe.returncode == 0, probe.stderr
    _check_probe(json.loads(probe.stdout))

    for args in (["-m", "distkit", "--version"], ["-m", "distkit.cli", "--version"]):
        assert run(*args).stdout.strip() == f"distkit {distkit.__version__}"
    script = subprocess.run([str(venv / "bin" / "distkit"), "id", "new", "-n", "2"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, env=env)
    assert script.returncode == 0 and len(script.stdout.split()) == 2


def test_license_is_the_apache_2_text():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License")
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert len(text) > 11000


def test_changelog_keeps_a_changelog_with_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog")
    assert "keepachangelog.com" in text and "## [Unreleased]" in text
    assert f"## [{distkit.__version__}]" in text


# --------------------------------------------------------------------------- CLI


def _walk(parser: argparse.ArgumentParser, path: str = "distkit"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", helps.get(name)
                yield from _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield f"{path} {'/'.join(action.option_strings) or action.dest}", action.help


def test_every_cli_command_and_option_has_help():
    seen = list(_walk(build_parser()))
    assert len(seen) >= 12  # --version, id, id new + 5 options, id decode + 3
    missing = [where for where, help_text in seen if not help_text or help_text == argparse.SUPPRESS]
    assert missing == []


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["nope"],
        ["id"],
        ["id", "new", "-n", "x"],
        ["id", "new", "--layout", "nope"],
        ["id", "decode", "12ab"],
        ["id", "decode"],
        ["id", "new", "--worker-id", "99999"],  # a DistkitError from the command itself
        ["id", "new", "--datacenter-id", "-1", "--layout", "butterfly"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args):
    res = subprocess.run([sys.executable, "-m", "distkit", *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("distkit") and ": error: " in lines[0]
    assert "Traceback" not in res.stderr


def test_python_m_distkit_runs_the_cli():
    res = subprocess.run([sys.executable, "-m", "distkit", "id", "new", "-n", "3"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    ids = [int(x) for x in res.stdout.split()]
    assert len(set(ids)) == 3 and ids == sorted(ids)
    res = subprocess.run([sys.executable, "-m", "distkit"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "usage: distkit" in res.stdout


# --------------------------------------------------------------------------- logging

_WARN = (
    "import logging, distkit.ratelimit, distkit.locks\n"
    "{setup}\n"
    "logging.getLogger('distkit.ratelimit.limiter').warning('limiter warning %s', 1)\n"
    "logging.getLogger('distkit.locks').error('lock error')\n"
    "logging.getLogger('distkit').critical('top-level critical')\n"
)


def test_distkit_logs_are_silent_until_the_application_configures_logging():
    quiet = subprocess.run([sys.executable, "-c", _WARN.format(setup="")], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
    handlers = [type(h).__name__ for h in __import__("logging").getLogger("distkit").handlers]
    assert "NullHandler" in handlers

    loud = subprocess.run([sys.executable, "-c", _WARN.format(setup="logging.basicConfig()")], capture_output=True,
                          text=True, timeout=60)
    assert loud.returncode == 0
    assert loud.stderr.splitlines() == [
        "WARNING:distkit.ratelimit.limiter:limiter warning 1",
        "ERROR:distkit.locks:lock error",
        "CRITICAL:distkit:top-level critical",
    ]
