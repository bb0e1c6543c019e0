"""``distkit saga list [--status failed] [--database-url URL] [--table T] [--json]``: what an operator looks at."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("saga", help="inspect sagas in a SQL saga log")
    cmds = parser.add_subparsers(dest="saga_command", metavar="<list>", required=True)
    lst = cmds.add_parser("list", help="list sagas (newest last), e.g. the stuck ones: --status failed")
    lst.add_argument("--status", choices=["running", "compensating", "completed", "compensated", "failed"],
                     default=None, help="only sagas in this status")
    lst.add_argument("--database-url", default=None,
                     help="SQLAlchemy URL of the saga log's database (default: $DISTKIT_DATABASE_URL)")
    lst.add_argument("--table", default="distkit_sagas", help="the saga log's table (default distkit_sagas)")
    lst.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")
    lst.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    lst.set_defaults(handler=_list)


def _list(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("DISTKIT_DATABASE_URL")
    if not url:
        print("distkit saga list: give --database-url or set DISTKIT_DATABASE_URL", file=sys.stderr)
        return 2
    if args.limit < 1:
        print("distkit saga list: --limit must be >= 1", file=sys.stderr)
        return 2
    from sqlalchemy import create_engine

    from distkit.saga import SagaStatus, SqlSagaLog

    engine = create_engine(url)
    try:
        status = SagaStatus(args.status.upper()) if args.status else None
        rows = SqlSagaLog(engine, args.table).find(status, args.limit)
    finally:
        engine.dispose()
    for r in rows:
        if args.json:
            print(json.dumps({"saga_id": r.saga_id, "saga": r.name, "status": r.status.value, "error": r.error,
                              "steps": {s["name"]: s["state"] for s in r.steps}, "updated_ms": r.updated_ms},
                             ensure_ascii=False))
        else:
            steps = " ".join(f"{s['name']}={s['state']}" for s in r.steps)
            print(f"{r.saga_id}\t{r.name}\t{r.status.value}\t{steps}\t{r.error or ''}")
    return 0
