"""A payment endpoint hit by a retrying client: charged once, every retry gets the same receipt."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import fakeredis

from distkit.errors import IdempotencyKeyMismatchError
from distkit.idempotency import RedisIdempotencyStore, idempotent


def main() -> None:
    redis_client = fakeredis.FakeRedis()  # embedded stand-in; use redis.Redis.from_url(...) in production
    store = RedisIdempotencyStore(redis_client, prefix="payments")
    charges: list[int] = []

    @idempotent(store, key=lambda req: req["idempotency_key"], payload=lambda req: req["amount_cents"])
    def charge(req: dict[str, Any]) -> dict[str, Any]:
        charges.append(req["amount_cents"])
        return {"receipt": uuid.uuid4(), "at": dt.datetime.now(dt.timezone.utc), "amount_cents": req["amount_cents"]}

    request = {"idempotency_key": "client-req-7", "amount_cents": 4200}
    receipts = [charge(request) for _ in range(3)]  # the client timed out and retried twice
    print(f"card charged {len(charges)} time(s); 3 responses identical: {receipts[0] == receipts[1] == receipts[2]}")
    print("receipt:", receipts[0]["receipt"], "(a UUID, returned as a UUID to every retry)")
    try:
        charge({"idempotency_key": "client-req-7", "amount_cents": 9900})
    except IdempotencyKeyMismatchError as exc:
        print("same key, different amount ->", type(exc).__name__)
