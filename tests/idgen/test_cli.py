import json

from distkit.cli import main
from distkit.idgen import Snowflake


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
