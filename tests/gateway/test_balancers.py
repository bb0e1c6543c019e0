"""Round-robin exactly fair under concurrency, nginx's smooth weighted sequence, least-requests, outliers."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from distkit.errors import NoInstanceError
from distkit.gateway import LeastRequests, OutlierDetector, RoundRobin, ServiceInstance, WeightedRoundRobin

A, B, C = (ServiceInstance("order", "10.0.0.1", p) for p in (8001, 8002, 8003))


def test_round_robin_gives_each_of_three_exactly_1000_of_3000_concurrent_picks() -> None:
    lb = RoundRobin()
    picks: list[str] = []
    lock = threading.Lock()
    gate = threading.Barrier(16)

    def worker(n: int) -> None:
        gate.wait(10)
        mine = [lb.choose([A, B, C]).instance_id for _ in range(n)]
        with lock:
            picks.extend(mine)

    threads = [threading.Thread(target=worker, args=(3000 // 16 + (1 if i < 3000 % 16 else 0),)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(picks) == {A.instance_id: 1000, B.instance_id: 1000, C.instance_id: 1000}


def _nginx_reference(weights: dict[str, int], n: int) -> str:
    """nginx's ngx_http_upstream_get_peer, written out independently: add weight, take max, subtract total."""
    current = dict.fromkeys(weights, 0)
    out = []
    for _ in range(n):
        for k, w in weights.items():
            current[k] += w
        best = max(current, key=lambda k: current[k])  # first max wins, like nginx's strict >
        current[best] -= sum(weights.values())
        out.append(best)
    return "".join(out)


@pytest.mark.parametrize("weights", [{"a": 5, "b": 1, "c": 1}, {"a": 3, "b": 2, "c": 1}, {"a": 1, "b": 1, "c": 1},
                                     {"a": 0, "b": 2, "c": 7}])
def test_smooth_weighted_round_robin_matches_nginx(weights: dict[str, int]) -> None:
    insts = {k: ServiceInstance("order", "h", 9000 + i, weight=w) for i, (k, w) in enumerate(weights.items())}
    lb = WeightedRoundRobin()
    names = {v.instance_id: k for k, v in insts.items()}
    got = "".join(names[lb.choose(list(insts.values())).instance_id] for _ in range(21))
    assert got == _nginx_reference(weights, 21)
    if weights == {"a": 5, "b": 1, "c": 1}:
        assert got[:7] == "aabacaa"


def test_least_requests_prefers_the_idle_instance() -> None:
    lb = LeastRequests()
    busy = [lb.track(A) for _ in range(5)]
    for cm in busy:
        cm.__enter__()
    assert {lb.choose([A, B]).instance_id for _ in range(200)} == {B.instance_id}
    for cm in busy:
        cm.__exit__(None, None, None)
    assert lb.in_flight(A) == 0
    assert {lb.choose([A, B]).instance_id for _ in range(200)} == {A.instance_id, B.instance_id}


def test_empty_lists_raise() -> None:
    for lb in (RoundRobin(), WeightedRoundRobin(), LeastRequests()):
        with pytest.raises(NoInstanceError):
            lb.choose([])


def test_outlier_ejection_grows_and_never_ejects_more_than_the_share() -> None:
    now = [0.0]
    det = OutlierDetector(consecutive_failures=3, base_ejection_s=10, max_ejected_share=0.5, clock=lambda: now[0])
    live = [A, B, C, ServiceInstance("order", "10.0.0.1", 8004)]
    for _ in range(3):
        det.record(A, False, live)
    assert det.ejected(A) and det.healthy(live) == live[1:]
    now[0] = 10.5
    assert not det.ejected(A)  # back after base_ejection_s
    for _ in range(3):
        det.record(A, False, live)
    now[0] = 25.0
    assert det.ejected(A)  # second ejection lasts 2 x 10 s
    for inst in (B, C):
        for _ in range(3):
            det.record(inst, False, live)
    assert det.ejected(B) and not det.ejected(C)  # 2 of 4 ejected is the cap
    det.record(C, True, live)
    assert det.healthy([A, B]) == [A, B]  # never an empty pool
