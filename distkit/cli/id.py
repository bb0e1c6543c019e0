"""``distkit id new [-n N]`` and ``distkit id decode <id> [--layout snowflake|butterfly]``.

Bad input (a negative count, a worker id its field cannot hold, a future epoch, an id outside 0..2**63-1)
prints one line naming the problem and exits 2. ``id new`` uses a static worker id and closes its generator
before exiting, which returns only once the clock has passed the last id's timestamp: back-to-back runs on the
same worker id never repeat an id.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from distkit.errors import InvalidArgumentError

_FUTURE_SLACK_MS = 60_000  # decoded timestamps further ahead than this are implausible


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
    new.set_defaults(handler=_guarded(_new))

    dec = cmds.add_parser("decode", help="print the fields of an id as JSON")
    dec.add_argument("id", type=int, help="the id to decode (a decimal integer)")
    dec.add_argument("--layout", choices=["snowflake", "butterfly"], default="snowflake",
                     help="bit layout the id was made with (default snowflake)")
    dec.add_argument("--epoch-ms", type=int, default=None,
                     help="epoch the id was made with, unix ms (default: distkit's epoch)")
    dec.set_defaults(handler=_guarded(_decode))


def _guarded(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except InvalidArgumentError as exc:
            print(f"distkit id {args.id_command}: error: {exc}", file=sys.stderr)
            return 2

    return run


def _new(args: argparse.Namespace) -> int:
    from distkit.errors import InvalidCountError
    from distkit.idgen import DEFAULT_EPOCH_MS, Butterfly, Snowflake

    if args.n < 0:
        raise InvalidCountError(f"-n must be >= 0, got {args.n}")
    epoch = args.epoch_ms if args.epoch_ms is not None else DEFAULT_EPOCH_MS
    if args.layout == "butterfly":
        gen: Any = Butterfly(worker_id=args.worker_id, epoch_ms=epoch, datacenter_id=args.datacenter_id)
    else:
        gen = Snowflake(worker_id=args.worker_id, datacenter_id=args.datacenter_id, epoch_ms=epoch)
    with gen:  # close() waits until the clock passed the last timestamp: the next run starts above it
        ids = gen.next_ids(args.n)
        if ids:
            sys.stdout.write("\n".join(map(str, ids)) + "\n")
    return 0


def _decode(args: argparse.Namespace) -> int:
    from distkit.idgen import DEFAULT_EPOCH_MS, decode
    from distkit.idgen.layout import LAYOUTS

    epoch = args.epoch_ms if args.epoch_ms is not None else DEFAULT_EPOCH_MS
    parts = decode(args.id, layout=LAYOUTS[args.layout], epoch_ms=epoch)
    ahead = parts.timestamp_ms - time.time_ns() // 1_000_000
    if ahead > _FUTURE_SLACK_MS:
        print(
            f"distkit id decode: warning: the timestamp is {ahead / 86_400_000:.1f} days in the future: this id was "
            f"probably not made with --layout {args.layout} and --epoch-ms {epoch}; the fields are implausible",
            file=sys.stderr,
        )
    try:
        when: str | None = parts.datetime.isoformat()
    except (OverflowError, ValueError, OSError):  # beyond what datetime can represent
        when = None
    print(json.dumps({**parts._asdict(), "datetime": when}))
    return 0
