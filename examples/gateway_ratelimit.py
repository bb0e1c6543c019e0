"""An API gateway in front of a flash sale: per-user token buckets, an exact cap on checkout, a queue that smooths
writes to the inventory service, and a degraded page when a user is over the limit."""

from __future__ import annotations

import fakeredis

from distkit.ratelimit import (
    FailurePolicy,
    LeakyBucket,
    Rate,
    RedisBackend,
    SlidingWindowLog,
    TokenBucket,
    qps_limit,
)


def main() -> None:
    backend = RedisBackend(fakeredis.FakeRedis(), prefix="gw")  # embedded stand-in for the shared Redis
    per_user = TokenBucket(Rate(5, per_s=1.0), burst=3, backend=backend, on_backend_error=FailurePolicy.FAIL_OPEN)

    @qps_limit(per_user, key=lambda user: user, fallback=lambda user: "503: cached sale page")
    def sale_page(user: str) -> str:
        return "200: live sale page"

    print("alice hammers the sale page:", [sale_page("alice")[:3] for _ in range(5)])
    print("bob is unaffected:", sale_page("bob")[:3])
    print("headers for alice's next request:", per_user.acquire("alice").headers())

    checkout = SlidingWindowLog(Rate(2, per_s=60), backend=backend, name="checkout")
    print("checkout attempts (exactly 2 per minute):", [checkout.acquire("alice").allowed for _ in range(4)])

    inventory = LeakyBucket(Rate(10, per_s=1.0), capacity=5, mode="queue", backend=backend, name="inventory")
    delays = [inventory.acquire("writes") for _ in range(6)]
    print(
        "inventory writes scheduled at",
        [f"{d.delay_s:.1f}s" for d in delays if d.allowed],
        "; rejected:",
        sum(not d.allowed for d in delays),
    )
