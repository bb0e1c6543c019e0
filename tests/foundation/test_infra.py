"""infra/services.py's bad-setup messages: they must say what to do (no server is touched here)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def services(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTKIT_SERVICES_DIR", str(tmp_path / "state"))
    spec = importlib.util.spec_from_file_location("distkit_infra_services", ROOT / "infra" / "services.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_port_in_use_picks_another(services, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        port = services.free_port(busy)
    assert port != busy and port > 0
    assert f"port {busy} is in use" in capsys.readouterr().err


def test_missing_java_names_the_package(services, monkeypatch):
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    monkeypatch.setattr(services, "KAFKA_LIBS", Path("/nonexistent"))
    with pytest.raises(services.SetupError, match="openjdk-17-jre-headless"):
        services.ensure_kafka_libs()


def test_service_that_never_comes_up_prints_its_log_tail(services, tmp_path):
    log = tmp_path / "kafka.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "ERROR Exiting Kafka: bad config\n")
    with pytest.raises(services.SetupError) as exc:
        services.wait_for(lambda: False, 0.3, "kafka on port 1", log)
    msg = str(exc.value)
    assert "did not come up" in msg and "ERROR Exiting Kafka: bad config" in msg and "line 99" in msg
    assert "line 10\n" not in msg  # only the tail


def test_unknown_service_is_an_error(services, capsys):
    assert services.main(["start", "mongodb"]) == 1
    assert "unknown service" in capsys.readouterr().err


def test_usage_without_command(services, capsys):
    assert services.main([]) == 2
    assert "start" in capsys.readouterr().out


def _top_imports(path: Path) -> set[str]:
    src = path.read_text()
    return {line.split()[1] for line in src.splitlines() if line.startswith(("import ", "from "))}


def test_runs_on_bare_python(tmp_path):
    # services.py must work before the venv exists: standard library only, plus the checkout's own
    # distkit.testing.services, which is standard library only too (distkit.errors imports nothing else)
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    cli = {m for m in _top_imports(ROOT / "infra" / "services.py") if not m.startswith("distkit.testing")}
    core = {m for m in _top_imports(ROOT / "distkit" / "testing" / "services.py") if m != "distkit.errors"}
    assert {m.split(".")[0] for m in cli | core} <= stdlib
    assert {m.split(".")[0] for m in _top_imports(ROOT / "distkit" / "errors.py")} <= stdlib
    # and it really runs without site-packages (-S) or PYTHONPATH: usage, then `env` of an empty state dir
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"DISTKIT_SERVICES_DIR": str(tmp_path)}
    script = [sys.executable, "-S", "-s", str(ROOT / "infra" / "services.py")]
    usage = subprocess.run(script, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert usage.returncode == 2 and "python infra/services.py start" in usage.stdout, usage.stderr
    (tmp_path / "ports.json").write_text('{"redis": 6390}')
    out = subprocess.run([*script, "env"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert (out.returncode, out.stdout) == (0, "export DISTKIT_REDIS_URL=redis://127.0.0.1:6390/0\n"), out.stderr


def test_cluster_ports_skip_pairs_whose_bus_port_is_taken(services):
    with socket.socket() as busy_bus:
        first = None
        for candidate in range(31000, 32000):  # find a free pair to block the bus port of
            if services.port_free(candidate) and services.port_free(candidate + 10000):
                first = candidate
                break
        assert first is not None
        busy_bus.bind(("127.0.0.1", first + 10000))
        ports = services.free_cluster_ports(first, 3)
    assert first not in ports and len(ports) == 3
    assert all(p <= 55535 for p in ports)


def test_kafka_storage_formats_a_cluster_id_that_starts_with_a_dash(services, tmp_path, kafka_bootstrap):
    """One random id in 64 starts with "-"; formatting once failed on it (argparse read it as an option)."""
    props = tmp_path / "server.properties"
    props.write_text(services.kafka_properties(19492, 19493, tmp_path / "data"))
    services.format_kafka_storage(props, "-" + "A" * 21)
    assert (tmp_path / "data" / "meta.properties").read_text().count("cluster.id=-" + "A" * 21) == 1
