"""A Hypothesis state machine over {issue, crash, restart, clock step +/-, lease expiry, fork, renewal, real time
passing} on the SQL and Redis leases: everything any generator ever issued is globally unique.

Two worker ids are shared by up to four generators, so takeovers happen all the time. A crash stops a holder
without releasing (its record expires after the ttl); "expire" deletes a record under a live holder (the worst
case: the store forgot it while the holder still believes in its deadline); a fork is modelled as a copy of a
generator that takes the child's path (``_after_fork_in_child``: lazy re-lease of a new worker id).
"""

from __future__ import annotations

import copy
import itertools
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from distkit.errors import ClockMovedBackwardsError, WorkerIdExhaustedError, WorkerLeaseLostError
from distkit.idgen import RollbackPolicy, Snowflake
from tests.fakeclock import FakeClock
from tests.idgen.conftest import Store

TTL_S = 0.3
ALLOWED = (WorkerLeaseLostError, ClockMovedBackwardsError)  # refusing is fine; repeating is not


class LeaseMachine(RuleBasedStateMachine):
    make_store: classmethod  # set per test: a fresh namespace per example

    def __init__(self) -> None:
        super().__init__()
        self.store: Store = type(self).make_store()
        self.clock = FakeClock(time.time_ns() // 1_000_000)
        self.gens: list[Snowflake] = []
        self.issued: set[int] = set()
        self.max_id = 1 if self.store.namespace[-1] in "36" else 0  # mostly one worker id: every start a takeover

    def _pick(self, i: int) -> Snowflake | None:
        return self.gens[i % len(self.gens)] if self.gens else None

    def _record(self, ids: list[int]) -> None:
        for value in ids:
            assert value not in self.issued, f"duplicate id {value}"
            self.issued.add(value)

    @initialize(policy=st.sampled_from([RollbackPolicy.WAIT, RollbackPolicy.LOGICAL]))
    def first(self, policy: RollbackPolicy) -> None:
        self.start(policy)  # waits out the new namespace's first ttl; later starts do not

    @rule(policy=st.sampled_from([RollbackPolicy.WAIT, RollbackPolicy.LOGICAL]))
    def start(self, policy: RollbackPolicy) -> None:
        if len(self.gens) >= 4:
            return
        try:
            lease = self.store.lease(max_worker_id=self.max_id, ttl_s=TTL_S)
            self.gens.append(Snowflake.from_lease(lease, clock=self.clock, rollback=policy))
        except (WorkerIdExhaustedError, ClockMovedBackwardsError):
            pass

    @rule(i=st.integers(0, 7), n=st.sampled_from([1, 5, 600, 5000]))
    def issue(self, i: int, n: int) -> None:
        gen = self._pick(i)
        if gen is None:
            return
        try:
            self._record([gen.next_id()] if n == 1 else gen.next_ids(n))
        except ALLOWED:
            pass

    @rule(n=st.sampled_from([1, 700]))
    def issue_from_all(self, n: int) -> None:
        for gen in self.gens * 2:  # every holder, twice: old and new holders interleave
            try:
                self._record([gen.next_id()] if n == 1 else gen.next_ids(n))
            except ALLOWED:
                pass

    @rule(i=st.integers(0, 7))
    def crash(self, i: int) -> None:
        if not self.gens:
            return
        gen = self.gens.pop(i % len(self.gens))
        lease = gen._lease
        assert lease is not None
        lease._deactivate()  # SIGKILL: no release, no more renewals; the record expires after the ttl
        lease._stop.set()
        gen._block("crashed")

    @rule(i=st.integers(0, 7))
    def restart(self, i: int) -> None:
        if not self.gens:
            return
        gen = self.gens.pop(i % len(self.gens))
        gen.close()
        self.start(gen.rollback)

    @rule(delta=st.sampled_from([-2500, -3, 1, 7, 2500]))
    def step_clock(self, delta: int) -> None:
        self.clock.advance(delta)

    @rule(i=st.integers(0, 7), successor=st.booleans())
    def expire(self, i: int, successor: bool) -> None:
        gen = self._pick(i)
        lease = gen._lease if gen is not None else None
        if lease is not None and lease.worker_id >= 0:
            self.store.expire(lease.worker_id)
            if successor:  # someone takes the id at once, while the old holder still trusts its deadline
                self.start(RollbackPolicy.WAIT)
                self.issue_from_all(700)  # ...and both keep issuing

    @rule(i=st.integers(0, 7))
    def fork(self, i: int) -> None:
        parent = self._pick(i)
        if parent is None or len(self.gens) >= 4:
            return
        assert parent._lease is not None
        lease = copy.copy(parent._lease)
        lease._after_fork_in_child()
        child = copy.copy(parent)
        child._lease = lease
        child._after_fork_in_child()
        self.gens.append(child)

    @rule(i=st.integers(0, 7))
    def renew(self, i: int) -> None:
        gen = self._pick(i)
        if gen is None:
            return
        assert gen._lease is not None
        gen._lease._renew_once(gen)

    @rule(seconds=st.sampled_from([0.02, 0.15, TTL_S + 0.05]))
    def real_time_passes(self, seconds: float) -> None:
        time.sleep(seconds)  # heartbeats run, crashed records expire, deadlines pass

    def teardown(self) -> None:
        for gen in self.gens:
            gen.close()
        self.store.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "sql"])
def test_leased_generators_never_repeat_an_id_under_any_interleaving(request, namespace, kind):
    counter = itertools.count()

    class Machine(LeaseMachine):
        @classmethod
        def make_store(cls) -> Store:
            return Store(kind, request, f"{namespace}-{next(counter)}")

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=10,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
