"""``distkit id new [-n N]`` and ``distkit id decode <id> [--layout snowflake|butterfly]``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("id", help="make and decode Snowflake / Butterfly ids")
    cmds = parser.add_subparsers(dest="id_command", metavar="<new|decode>", required=True)

    new = cmds.add_parser("new", help="print new ids (static worker id: for scripts and tests, not services)")
    new.add_argument("-n", type=int, default=1, help="how many ids (default 1)")
    new.add_argument("--layout", choices=["snowflake", "butterfly"], default="snowflake",
                     help="bit layout of the ids (default snowflake)")
    new.add_argument("--worker-id", type=int, default=0, help="worker id stamped into each id (default 0)")
    new.add_argument("--datacenter-id", type=int, default=0, help="datacenter id stamped into each id (default 0)")
    new.add_argument("--epoch-ms", type=int, default=None,
                     help="custom epoch in unix ms (default: distkit's epoch, DEFAULT_EPOCH_MS)")
    new.set_defaults(handler=_new)

    dec = cmds.add_parser("decode", help="print the fields of an id as JSON")
    dec.add_argument("id", type=int, help="the id to decode (a decimal integer)")
    dec.add_argument("--layout", choices=["snowflake", "butterfly"], default="snowflake",
                     help="bit layout the id was made with (default snowflake)")
    dec.add_argument("--epoch-ms", type=int, default=None,
                     help="epoch the id was made with, unix ms (default: distkit's epoch)")
    dec.set_defaults(handler=_decode)


def _new(args: argparse.Namespace) -> int:
    from distkit.idgen import DEFAULT_EPOCH_MS, Butterfly, Snowflake

    epoch = args.epoch_ms if args.epoch_ms is not None else DEFAULT_EPOCH_MS
    if args.layout == "butterfly":
        gen: Any = Butterfly(worker_id=args.worker_id, epoch_ms=epoch, datacenter_id=args.datacenter_id)
    else:
        gen = Snowflake(worker_id=args.worker_id, datacenter_id=args.datacenter_id, epoch_ms=epoch)
    for value in gen.next_ids(args.n):
        print(value)
    return 0


def _decode(args: argparse.Namespace) -> int:
    from distkit.idgen import DEFAULT_EPOCH_MS, decode
    from distkit.idgen.layout import LAYOUTS

    epoch = args.epoch_ms if args.epoch_ms is not None else DEFAULT_EPOCH_MS
    parts = decode(args.id, layout=LAYOUTS[args.layout], epoch_ms=epoch)
    print(json.dumps({**parts._asdict(), "datetime": parts.datetime.isoformat()}))
    return 0
