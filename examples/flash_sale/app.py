"""Flash sale: 100 phones, 1000 buyers at the same instant, three oversell-proof stock strategies.

Each strategy sits behind the same checkout (QPS limit -> bulkhead -> one deduction; shedding degrades to
"try later"), and at the end the buyers' answers are compared with the store's own ledger.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from distkit.ratelimit import Rate, RedisBackend, TokenBucket
from distkit.resilience import Bulkhead
from examples._story import Story
from examples._wiring import Wiring
from examples.flash_sale.audit import StockAudit
from examples.flash_sale.sale import SaleResult, run_sale
from examples.flash_sale.shop import ANSWERS, SOLD, SOLD_OUT, checkout_endpoint
from examples.flash_sale.strategies import Strategy, build

STRATEGIES = ("redis", "tokens", "locked-db")
# The limiter admits a burst of 200 checkouts, then 200/s: enough to sell 100 units, while most of the crowd
# hears "try later" without touching the stock. The bulkhead keeps at most 16 deductions in flight (below the
# database pool of 20) out of the shop's 64 workers; a request waits up to 5 s for a slot, then hears "try later".
RATE, BURST, WORKERS, IN_FLIGHT, SLOT_WAIT_S = Rate(200, per_s=1.0), 200, 64, 16, 5.0


def main(wiring: Wiring | None = None, *, buyers: int = 1000, units: int = 100, deliveries: int = 1,
         strategies: Sequence[str | Callable[[Wiring], Strategy]] = STRATEGIES) -> Story:
    """``deliveries=2`` sends every buyer's request twice, back to back (a duplicate delivery of the same order
    id, racing the original): still exactly ``units`` sold and no order twice. A strategy is a name of
    :func:`build` or a builder of your own (the tests bring a broken one, to show the checks catch it)."""
    own = wiring is None
    w = wiring if wiring is not None else Wiring.from_env()
    twice = f", every request delivered {deliveries} times" if deliveries > 1 else ""
    story = Story(f"Flash sale: {units} units, {buyers} buyers{twice}")
    backend = RedisBackend(w.redis, prefix=f"{w.namespace}:rl")
    limiter = TokenBucket(RATE, burst=BURST, backend=backend, name="checkout")
    try:
        for name in strategies:
            strategy = build(w, name) if isinstance(name, str) else name(w)
            try:
                _sell(story, strategy, limiter, buyers, units, deliveries)
            finally:
                strategy.close()
    finally:
        backend.close()
        if own:
            w.close()
    return story.finish()


def _sell(story: Story, s: Strategy, limiter: TokenBucket[RedisBackend], buyers: int, units: int,
          deliveries: int) -> None:
    s.stock.load(s.sku, units)
    bulkhead = Bulkhead(f"checkout-{s.name}", max_concurrent=IN_FLIGHT, max_wait_s=SLOT_WAIT_S)
    buy = checkout_endpoint(s.stock, s.sku, limiter, bulkhead)
    story.step(f"[{s.name}] {type(s.stock).__name__}: {units} units loaded, doors open for {buyers} buyers")
    audit = StockAudit(s.stock, s.sku, s.ledger, units)
    sale = run_sale(buy, buyers, deliveries=deliveries, prefix=f"{s.name}-order", workers=WORKERS,
                    watch=audit.sample)
    story.fact(f"{s.name}.peak_in_flight", bulkhead.metrics().peak_in_flight)
    _report(story, s.name, sale, s.ledger(), units, deliveries, s.stock.available(s.sku), audit)


def _report(story: Story, name: str, sale: SaleResult, ledger: list[str], units: int, deliveries: int,
            left: int, audit: StockAudit) -> None:
    outcomes = sale.outcomes()
    sold = {o for o in sale.answers if sale.final(o) == SOLD}
    per_request: Counter[str] = Counter(a for got in sale.answers.values() for a in got)
    rejected = {a: per_request[a] for a in ANSWERS[1:]} | {a: n for a, n in per_request.items() if a not in ANSWERS}
    story.step(f"[{name}] sold = {outcomes[SOLD]}, duplicates = {len(ledger) - len(set(ledger))}, rejected "
               f"{rejected}; {sale.seconds:.2f} s, answer p50 {sale.percentile_ms(0.5):.0f} ms, "
               f"p99 {sale.percentile_ms(0.99):.0f} ms")
    for key, value in (("sold", len(sold)), ("duplicates", len(ledger) - len(set(ledger))), ("rejected", rejected),
                       ("answers", dict(per_request)), ("seconds", round(sale.seconds, 3)), ("left", left),
                       ("p99_ms", round(sale.percentile_ms(0.99), 1)), ("lowest_stock", audit.lowest),
                       ("audits", audit.samples), ("mismatches", audit.mismatches[:3])):
        story.fact(f"{name}.{key}", value)
    story.check(f"{name}: sold == units", len(sold) == units == len(ledger) and left == 0,
                f"{len(sold)} buyers told 'sold', {len(ledger)} deductions in the store, {left} left")
    story.check(f"{name}: no order sold twice", len(ledger) == len(set(ledger)),
                f"{len(ledger) - len(set(ledger))} duplicates in the store's ledger")
    story.check(f"{name}: stock adds up", audit.adds_up, audit.summary())
    odd = [o for o, got in sale.answers.items() if len(got) != deliveries or not set(got) <= set(ANSWERS)]
    story.check(f"{name}: one answer per request", not odd,
                f"{len(sale.answers) * deliveries} requests answered" if not odd else f"e.g. {sale.answers[odd[0]]}")
    both = [o for o, got in sale.answers.items() if SOLD in got and SOLD_OUT in got]
    story.check(f"{name}: answers match the store", sold == set(ledger) and not both,
                f"{len(sold ^ set(ledger))} differences, {len(both)} orders told both 'sold' and 'sold out'")
