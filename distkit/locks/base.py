"""What the sync and asyncio classes share: the factory (:class:`LocksBase`), the lock view
(:class:`LockView`) and the semaphore view (:class:`SemaphoreView`). No I/O here: views build flows
(:mod:`distkit.locks.flows`) and the subclasses run them blocking or awaiting.
"""

from __future__ import annotations

import atexit
import os
import uuid
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from distkit.errors import InvalidArgumentError, LockError, LockNotOwnedError
from distkit.locks import flows
from distkit.locks.flows import Context
from distkit.locks.holds import Hold, HoldTable
from distkit.locks.ops import Call, Command, Flow, Op, Subscribe, Unsubscribe, Wait
from distkit.locks.specs import FREED, ExclusiveSpec, SharedSpec, Spec

L = TypeVar("L", bound="LockView")
S = TypeVar("S", bound="SemaphoreView")

_live: weakref.WeakSet[LocksBase[Any, Any]] = weakref.WeakSet()


def _positive_ms(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgumentError(f"{what} must be a positive number of milliseconds (int), got {value!r}")
    return value


class LocksBase(Generic[L, S]):
    """Factory of lock objects over one Redis client and namespace (see :class:`~distkit.locks.Locks`)."""

    lock_class: type[L]
    semaphore_class: type[S]
    # set by the sync / asyncio subclass: the caller's serial and liveness check, and the background workers
    owner_fns: ClassVar[tuple[Callable[[], int], Callable[[], Callable[[], bool]]]]
    hub_class: ClassVar[type[Any]]
    watchdog_class: ClassVar[type[Any]]

    def __init__(
        self,
        client: Any,
        namespace: str = "distkit",
        *,
        lease_ms: int = 30_000,
        waiter_ttl_ms: int = 10_000,
        linger_s: float = 2.0,
    ) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise InvalidArgumentError(f"namespace must be a non-empty str, got {namespace!r}")
        if client is None:
            raise InvalidArgumentError("client is required: pass a redis-py client (Settings.from_env().redis())")
        self.client = client
        self.namespace = namespace
        self.lease_ms = _positive_ms("lease_ms", lease_ms)
        self.waiter_ttl_ms = _positive_ms("waiter_ttl_ms", waiter_ttl_ms)
        if isinstance(linger_s, bool) or not isinstance(linger_s, int | float) or not linger_s >= 0:
            raise InvalidArgumentError(f"linger_s must be a number of seconds >= 0, got {linger_s!r}")
        self.linger_s = float(linger_s)
        self.instance_id = uuid.uuid4().hex[:16]
        self.closed = False
        self._new_state()
        _live.add(self)

    def _new_state(self) -> None:
        self.holds = HoldTable()
        self.context = Context(self.holds, self.lease_ms, self.kick_watchdog, self.alive)
        self._reset_io()

    # ------------------------------------------------------------------ factories

    def lock(self, name: str) -> L:
        """A reentrant exclusive lock; reentrancy is per (process, thread) or per asyncio task."""
        return self.lock_class(self, ExclusiveSpec(self.namespace, self._name(name)))

    def fair_lock(self, name: str, *, waiter_ttl_ms: int | None = None) -> L:
        """An exclusive lock granted in FIFO order among waiters. A waiter refreshes its place in the queue
        every ``waiter_ttl_ms / 3``; one that dies loses its place after ``waiter_ttl_ms``."""
        ttl = self.waiter_ttl_ms if waiter_ttl_ms is None else _positive_ms("waiter_ttl_ms", waiter_ttl_ms)
        return self.lock_class(self, ExclusiveSpec(self.namespace, self._name(name), waiter_ttl_ms=ttl))

    def semaphore(self, name: str, permits: int, *, lease_ms: int | None = None) -> S:
        """At most ``permits`` concurrent holders; each permit expires after ``lease_ms`` (None: renewed by the
        watchdog while its thread / task lives)."""
        if isinstance(permits, bool) or not isinstance(permits, int) or permits <= 0:
            raise InvalidArgumentError(f"permits must be a positive int, got {permits!r}")
        lease = None if lease_ms is None else _positive_ms("lease_ms", lease_ms)
        spec = SharedSpec(self.namespace, self._name(name), kind="s", limit=permits, waiter_ttl_ms=self.waiter_ttl_ms)
        return self.semaphore_class(self, spec, lease)

    def rw_lock(self, name: str, *, prefer_writers: bool = False) -> ReadWriteLock[L]:
        """A read-write lock; ``prefer_writers=True`` makes a waiting writer stop new readers, so a stream of
        readers cannot starve it."""
        return ReadWriteLock(self, name, prefer_writers)

    def _shared(self, name: str, kind: str, prefer_writers: bool) -> L:
        spec = SharedSpec(self.namespace, name, kind=kind, limit=int(prefer_writers), waiter_ttl_ms=self.waiter_ttl_ms)
        return self.lock_class(self, spec)

    @staticmethod
    def _name(name: str) -> str:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"lock name must be a non-empty str, got {name!r}")
        return name

    # ------------------------------------------------------------------ owners, lifecycle

    def holder(self) -> str:
        """The caller's owner id in Redis: this instance and the calling thread (or task)."""
        return f"{self.instance_id}:{self.owner_fns[0]()}"

    def alive(self) -> Callable[[], bool]:
        """The caller's liveness check (its thread's ``is_alive``, or its task's ``not done()``)."""
        return self.owner_fns[1]()

    def kick_watchdog(self, hold: Hold) -> None:
        self.watchdog.kick(hold)

    def _reset_io(self) -> None:
        """(Re)create the pub/sub hub and the watchdog (started on first need) and the I/O dispatch table."""
        client, ns = self.client, self.namespace
        self.hub = hub = self.hub_class(client, f"distkit-locks-pubsub-{ns}", self.linger_s)
        self.watchdog = self.watchdog_class(client, self.holds, self.lease_ms, f"distkit-watchdog-{ns}")
        self._dispatch: dict[type, Callable[[Any], Any]] = {
            Call: self._script,
            Command: lambda op: client.execute_command(*op.args),
            Subscribe: lambda op: hub.subscribe(op.channel, op.holder),
            Wait: lambda op: hub.wait(op.waiter, op.seconds),
            Unsubscribe: lambda op: hub.unsubscribe(op.waiter),
        }

    def _script(self, op: Call) -> Any:
        raise NotImplementedError

    def execute(self, op: Op) -> Any:
        """Perform one operation of a flow: a value (sync clients) or an awaitable (asyncio clients)."""
        return self._dispatch[type(op)](op)

    def _after_fork_in_child(self) -> None:
        # the child is a different owner: fresh id, no holds, no threads, no sockets shared with the parent
        self.instance_id = uuid.uuid4().hex[:16]
        self._new_state()

    def _check_open(self) -> None:
        if self.closed:
            raise LockError(f"Locks(namespace={self.namespace!r}) is closed; create a new one")


def _after_fork_in_child() -> None:
    for locks in list(_live):
        locks._after_fork_in_child()


def _close_all_at_exit() -> None:
    for locks in list(_live):
        close: Callable[[], Any] | None = getattr(locks, "close_threads", None)
        if close is not None:
            close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)


class _View:
    """What lock and semaphore views share: the factory, the spec and the ``on_lost`` callback."""

    def __init__(self, locks: LocksBase[Any, Any], spec: Spec) -> None:
        self._locks = locks
        self._spec = spec
        self.on_lost: Callable[[], Any] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._spec.name!r}, kind={self._spec.kind!r})"

    @property
    def name(self) -> str:
        return self._spec.name


class LockView(_View):
    """A named lock (or one side of a read-write lock). Cheap: state lives in Redis and in the factory's
    hold table, so two views of the same name in one thread share reentrancy."""

    @property
    def hold_count(self) -> int:
        """How many times the caller holds it (0: not held). Local, no round trip."""
        hold = self._locks.holds.get(self._spec.hold_key, self._locks.holder())
        return hold.count if hold else 0

    @property
    def fencing_token(self) -> int:
        """The token of the caller's current hold: strictly greater than every earlier hold's. Pass it to the
        resource and let it reject writes carrying a lower token than the last one it saw."""
        hold = self._locks.holds.get(self._spec.hold_key, self._locks.holder())
        if hold is None:
            raise LockNotOwnedError(f"{self._spec.name!r} is not held by the caller: no fencing token")
        return int(hold.token)

    @property
    def lost(self) -> bool:
        """True once the watchdog found the caller's hold gone (``on_lost`` has been called)."""
        hold = self._locks.holds.get(self._spec.hold_key, self._locks.holder())
        return bool(hold and hold.lost)

    def _acquire(self, blocking: bool, timeout: float | None, lease_ms: int | None) -> Flow[bool]:
        self._locks._check_open()
        locks = self._locks
        return flows.acquire(
            locks.context, self._spec, locks.holder(), self, blocking=blocking, timeout=timeout, lease_ms=lease_ms
        )

    def _release(self) -> Flow[None]:
        return flows.release(self._locks.holds, self._spec, self._locks.holder())

    def _state(self) -> Flow[tuple[bool, bool]]:
        return self._spec.state(self._locks.holder())


class SemaphoreView(_View):
    """Expirable permits (Redisson's ``RPermitExpirableSemaphore``): ``acquire`` returns a permit id that any
    process may ``release``; a permit nobody releases expires after its lease."""

    _spec: SharedSpec

    def __init__(self, locks: LocksBase[Any, Any], spec: SharedSpec, lease_ms: int | None) -> None:
        super().__init__(locks, spec)
        self._lease_ms = lease_ms
        self._entered: dict[str, list[str]] = {}  # holder -> permits taken by ``with``

    @property
    def permits(self) -> int:
        return self._spec.limit

    def _acquire(self, blocking: bool, timeout: float | None, lease_ms: int | None) -> Flow[str | None]:
        self._locks._check_open()
        permit = uuid.uuid4().hex
        lease = self._lease_ms if lease_ms is None else lease_ms
        ok = yield from flows.acquire(
            self._locks.context, self._spec, permit, self, blocking=blocking, timeout=timeout, lease_ms=lease
        )
        return permit if ok else None

    def _release(self, permit: str) -> Flow[None]:
        if self._locks.holds.get(self._spec.hold_key, permit) is not None:
            yield from flows.release(self._locks.holds, self._spec, permit, "permit")
            return
        # a permit taken elsewhere (another process): release it if it is still there
        reply = yield self._spec.release_call(permit, "", 1)
        if int(reply) != FREED:
            raise LockNotOwnedError(f"permit {permit!r} of {self._spec.name!r} is not held (released or expired)")

    def _available(self) -> Flow[int]:
        live = yield from self._spec.live_holds()
        return max(0, self._spec.limit - live)

    def _push(self, permit: str | None) -> str:
        if permit is None:
            raise AssertionError("a blocking acquire without timeout returned no permit")  # pragma: no cover
        self._entered.setdefault(self._locks.holder(), []).append(permit)
        return permit

    def _pop(self) -> str:
        stack = self._entered.get(self._locks.holder())
        if not stack:
            raise LockNotOwnedError(f"{self._spec.name!r}: no permit taken with 'with' by the caller")
        permit = stack.pop()
        if not stack:
            del self._entered[self._locks.holder()]
        return permit


class ReadWriteLock(Generic[L]):
    """Many readers or one writer (Redisson's ``RReadWriteLock``). Both sides are reentrant lock objects;
    a writer may take the read lock (downgrade), a reader asking for the write lock gets
    :class:`~distkit.errors.LockUpgradeError` at once instead of deadlocking against itself."""

    def __init__(self, locks: LocksBase[L, Any], name: str, prefer_writers: bool = False) -> None:
        name = locks._name(name)
        self.name = name
        self.prefer_writers = prefer_writers
        self._read = locks._shared(name, "r", prefer_writers)
        self._write = locks._shared(name, "w", prefer_writers)

    def __repr__(self) -> str:
        return f"ReadWriteLock({self.name!r}, prefer_writers={self.prefer_writers})"

    def read_lock(self) -> L:
        """The shared side: any number of holders while nobody writes."""
        return self._read

    def write_lock(self) -> L:
        """The exclusive side: excludes readers and other writers."""
        return self._write
