"""The gateway reference app: JWT login, round-robin over two order instances found in the ServiceRegistry,
a per-user rate limit, a circuit breaker in front of a flaky pricing dependency, an instance crash mid-run
and one trace id from the client to a Kafka consumer. ``python -m examples gateway``.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from typing import Any

import httpx

from distkit.resilience import State
from examples._story import Story
from examples._wiring import Wiring
from examples.gateway.login import Client
from examples.gateway.shop import INSTANCES, Shop


def main(wiring: Wiring | None = None) -> Story:
    """Run the whole story on ``wiring`` (default: ``Wiring.from_env()``, closed at the end)."""
    own = wiring is None
    w = wiring if wiring is not None else Wiring.from_env()
    story = Story("gateway: JWT, round-robin, rate limit, failover, circuit breaker, one trace")
    try:
        with Shop(w) as shop, httpx.Client(base_url=shop.url, timeout=10) as client:
            story.step(f"gateway on {shop.url}; order instances {shop.live()} on ports "
                       f"{[s.port for s in shop.servers.values()]}, found in the registry")
            story.fact("ports", [s.port for s in (shop.gateway_server, shop.pricing_server, *shop.servers.values())])
            run(story, shop, Client(client, shop.login))
    finally:
        if own:
            w.close()
    return story.finish()


def run(story: Story, shop: Shop, c: Client) -> None:
    for phase in (tokens, pricing_outage, load, greedy_user, crash, one_trace):
        phase(story, shop, c)


def tokens(story: Story, shop: Shop, c: Client) -> None:
    """No token, a tampered one, an expired one: 401 with a challenge, and no instance sees the request."""
    tampered, expired = shop.login.token("mallory")[:-4] + "AAAA", shop.login.token("eve", ttl_s=-3600)
    bad = [c.http.get("/orders/1", headers={"Authorization": f"Bearer {t}"} if t else {})
           for t in ("", tampered, expired)]
    reasons = [r.json().get("reason", "missing") for r in bad]
    story.step(f"no token / tampered / expired token -> {[r.status_code for r in bad]} ({', '.join(reasons)})")
    story.check("no_valid_token_gets_401", all(r.status_code == 401 and r.headers.get("www-authenticate", "")
                                               .startswith("Bearer") for r in bad)
                and sum(o.served for o in shop.orders.values()) == 0, f"reasons {reasons}")


def pricing_outage(story: Story, shop: Shop, c: Client) -> None:
    """Each instance's breaker opens after 4 failed pricing calls; the catalogue price answers meanwhile."""
    shop.pricing.down, calls_before = True, shop.pricing.calls
    outage = [c.get("bob", n) for n in range(12)]
    pricing_calls = shop.pricing.calls - calls_before
    states = {name: o.breaker.state for name, o in shop.orders.items()}
    story.step(f"pricing down: 12 quotes -> {Counter(r.json()['source'] for r in outage)}, pricing called "
               f"{pricing_calls} times, breakers {[str(s) for s in states.values()]}")
    story.fact("pricing_calls_while_down", pricing_calls)
    story.check("breaker_opened_and_fallback_answered",
                all(r.status_code == 200 and r.json()["source"] == "catalogue" for r in outage)
                and set(states.values()) == {State.OPEN} and pricing_calls == 4 * len(INSTANCES),
                f"{pricing_calls} pricing calls for 12 quotes")
    shop.pricing.down = False
    healed: set[str] = set()

    def both_healed() -> bool:  # one quote per 0.1 s: within dora's rate limit
        quote = c.get("dora", 1).json()
        healed.update([quote["instance"]] if quote.get("source") == "pricing" else [])
        return healed == set(INSTANCES)

    took = shop.wait_until(both_healed, 8, "the breakers to close again", interval_s=0.1)
    story.step(f"pricing back: both breakers closed again after {took:.1f} s (open_s=1, one probe each)")
    story.fact("breaker_recovery_s", round(took, 2))


def load(story: Story, shop: Shop, c: Client) -> None:
    """40 GETs from 4 users, each with a forged x-user-id: round-robin splits them evenly, the header is dropped."""
    replies = [c.get(u, n, **{"x-user-id": "admin"}) for n in range(10) for u in ("ann", "ben", "cat", "dan")]
    spread = Counter(r.json()["instance"] for r in replies)
    story.step(f"40 GETs -> {dict(spread)}; users the service saw: {sorted({r.json()['user'] for r in replies})}")
    story.fact("spread", dict(spread))
    story.check("round_robin_even", sorted(spread.values()) == [20, 20] and {r.status_code for r in replies} == {200},
                str(dict(spread)))
    story.check("forged_user_header_dropped", {r.json()["user"] for r in replies} == {"ann", "ben", "cat", "dan"})


def greedy_user(story: Story, shop: Shop, c: Client) -> None:
    """The per-user bucket (20 at once, 10/s) answers 429 with its headers; other users are unaffected."""
    t0 = time.monotonic()
    greedy = [c.get("mallory", n) for n in range(40)]
    elapsed, allowed = time.monotonic() - t0, sum(r.status_code == 200 for r in greedy)
    limited = [r for r in greedy if r.status_code == 429]
    story.step(f"mallory sends {len(greedy)} GETs in {elapsed:.2f} s: {allowed} x 200, {len(limited)} x 429 "
               f"(Retry-After {limited[0].headers.get('retry-after') if limited else '-'})")
    story.fact("rate_limited", len(limited))
    story.check("rate_limit_429_with_headers", bool(limited) and allowed <= 20 + 10 * elapsed + 1 and all(
        r.headers.get("retry-after") and "ratelimit" in r.headers and "ratelimit-policy" in r.headers
        for r in limited) and c.get("ann", 7).status_code == 200, f"{allowed} allowed, {len(limited)} limited")


def crash(story: Story, shop: Shop, c: Client) -> None:
    """order-a crashes (never deregistered); idempotent GETs keep working through order-b."""
    victim, survivor = INSTANCES
    picks_before = shop.balancer.picks[victim]
    shop.kill(victim)
    after = [c.get(u, n) for n in range(10) for u in ("eli", "fay", "gus")]
    failed = [r.status_code for r in after if r.status_code != 200]
    tries = shop.balancer.picks[victim] - picks_before
    ejected = shop.outlier.ejected(shop.registrations[victim].instance)
    story.step(f"{victim} killed: {len(after)} GETs -> {len(failed)} failed; the gateway tried {victim} {tries} "
               f"times (connection refused, retried on {survivor}), {'then ejected it' if ejected else 'NOT ejected'}")
    gone = shop.wait_until(lambda: victim not in shop.live(), shop.registry.ttl_s + 3, f"{victim} to expire")
    story.step(f"the registry dropped {victim} {gone:.1f} s later (ttl {shop.registry.ttl_s:g} s, no heartbeat)")
    story.fact("failed_gets_after_kill", len(failed))
    story.fact("attempts_on_killed_instance", tries)
    story.check("no_failed_get_after_kill", not failed and {r.json()["instance"] for r in after} == {survivor})
    story.check("killed_instance_ejected", ejected and tries == shop.outlier.consecutive_failures
                and shop.live() == [survivor], f"{tries} attempts, live now {shop.live()}")


def one_trace(story: Story, shop: Shop, c: Client) -> None:
    """One trace id: client -> gateway -> order service -> Kafka -> shipping consumer."""
    trace_id = secrets.token_hex(16)
    resp = c.http.post("/orders", json={"sku": "kettle"}, headers={
        **c.auth("ann"), "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    order: dict[str, Any] = resp.json()
    seen = shop.shipping.trace_id_of(order.get("order_id", ""), 15)
    names = [s.name for s in shop.spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    story.step(f"POST /orders with trace {trace_id[:8]}… -> {resp.status_code} from {order.get('instance')}; "
               f"shipping saw trace {str(seen)[:8]}…; spans in it: {names}")
    story.fact("trace_ids", {"client": trace_id, "service": order.get("trace_id"), "consumer": seen})
    story.check("one_trace_id_end_to_end", resp.status_code == 201 and order.get("trace_id") == seen == trace_id)
