"""infra/services.py's bad-setup messages: they must say what to do (no server is touched here)."""

from __future__ import annotations

import importlib.util
import socket
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


def test_runs_on_bare_python():
    # services.py must work before the venv exists: standard library only.
    src = (ROOT / "infra" / "services.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in src.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= set(sys.stdlib_module_names) | {"__future__"}


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
