import json
import subprocess
import sys
import time

import pytest

from distkit.cli import main
from distkit.idgen import Snowflake
from tests.idgen.conftest import ROOT


def test_id_new_and_decode(capsys):
    assert main(["id", "new", "-n", "5", "--worker-id", "9"]) == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert len(set(ids)) == 5 and ids == sorted(ids)
    assert main(["id", "decode", str(ids[0])]) == 0
    parts = json.loads(capsys.readouterr().out)
    assert parts["worker_id"] == 9 and parts["datacenter_id"] == 0
    assert parts["timestamp_ms"] == Snowflake(worker_id=9).decode(ids[0]).timestamp_ms


def test_id_decode_butterfly_layout(capsys):
    value = (123 << 22) | (4321 << 9) | 17
    assert main(["id", "decode", str(value), "--layout", "butterfly", "--epoch-ms", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["worker_id"] == 4321


@pytest.mark.slow
def test_back_to_back_cli_runs_share_no_id(capsys):
    """3: two back-to-back `distkit id new --layout butterfly` runs on the same static worker id: 0 shared ids.
    (In one process, so the second run starts as soon as the first returned; the deterministic version of this
    is test_generators.py::test_static_butterfly_restarted_at_once_repeats_nothing.)"""
    runs = []
    for _ in range(2):
        assert main(["id", "new", "-n", "300000", "--layout", "butterfly"]) == 0
        runs.append(set(capsys.readouterr().out.split()))
    assert len(runs[0]) == len(runs[1]) == 300_000
    assert len(runs[0] & runs[1]) == 0


def test_cli_runs_as_a_module():
    out = subprocess.run(
        [sys.executable, "-m", "distkit.cli", "id", "new", "-n", "3"], cwd=ROOT, capture_output=True, check=True
    )
    assert len(set(out.stdout.split())) == 3


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["new", "-n", "-1"], "-n must be >= 0"),
        (["new", "--worker-id", "32"], "worker_id must be an int in 0..31"),
        (["new", "--epoch-ms", str(time.time_ns() // 1_000_000 + 86_400_000)], "in the future"),
        (["decode", "-5"], "non-negative 63-bit"),
        (["decode", str(2**63)], "non-negative 63-bit"),
        (["new", "--layout", "butterfly", "--worker-id", "8192"], "0..8191"),
    ],
)
def test_out_of_range_input_prints_one_line_and_exits_2(capsys, argv, words):
    """14: no traceback: one line naming the problem, exit code 2."""
    assert main(["id", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in captured.err


def test_decoding_with_the_wrong_layout_or_epoch_warns(capsys):
    """14: a Snowflake id made with epoch 0, decoded as Butterfly with the default epoch, lands 40 years ahead."""
    value = Snowflake(worker_id=3, epoch_ms=0).next_id()
    assert main(["id", "decode", str(value), "--layout", "butterfly"]) == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "future" in captured.err
    assert json.loads(captured.out)["timestamp_ms"] > time.time_ns() // 1_000_000
    assert main(["id", "decode", str(Snowflake(worker_id=3).next_id())]) == 0
    assert capsys.readouterr().err == ""
