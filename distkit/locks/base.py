"""What the sync and asyncio classes share: the factory (:class:`LocksBase`), the lock view
(:class:`LockView`) and the semaphore view (:class:`SemaphoreView`). No I/O here: views build flows
(:mod:`distkit.locks.flows`) and the subclasses run them blocking or awaiting.

A view takes the caller's owner id and liveness check *when the method is called*, not when its flow runs:
``asyncio.wait_for(lock.acquire(), 2)`` on Python 3.10 / 3.11 runs the flow in a task of its own, and the
lock must still belong to the task that called ``acquire()``.
"""

from __future__ import annotations

import atexit
import math
import os
import time
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from redis.exceptions import ResponseError

from distkit._types import is_async_client
from distkit.errors import InvalidArgumentError, LockConfigConflictError, LockNotOwnedError, LocksClosedError
from distkit.locks import flows
from distkit.locks.flows import Context, lease_of
from distkit.locks.holds import Hold, HoldTable
from distkit.locks.ops import Call, Command, Flow, Op, Sleep, Subscribe, Unsubscribe, Wait
from distkit.locks.specs import FREED, PARTIAL, ExclusiveSpec, SharedSpec, Spec

if TYPE_CHECKING:
    from distkit._types import RedisLike

L = TypeVar("L", bound="LockView")
S = TypeVar("S", bound="SemaphoreView")
C = TypeVar("C", bound="RedisLike")  # the client kind: Locks take a sync client, AsyncLocks an asyncio one

_live: weakref.WeakSet[LocksBase[Any, Any, Any]] = weakref.WeakSet()
MAX_NAME_BYTES = 4096


def _positive_ms(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= flows.MAX_LEASE_MS:
        raise InvalidArgumentError(f"{what} must be a positive number of milliseconds (int), got {value!r}")
    return value


def _text(what: str, value: Any) -> str:
    """A non-empty str that Redis can store (valid UTF-8: no lone surrogates) and of a sane size."""
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{what} must be a non-empty str, got {value!r}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"{what} {value!r} is not valid Unicode text ({exc.reason} at {exc.start}): use a str without lone "
            "surrogates"
        ) from None
    if size > MAX_NAME_BYTES:
        raise InvalidArgumentError(f"{what} is {size} bytes in UTF-8; keep it under {MAX_NAME_BYTES}")
    return value


def kind_conflict(exc: ResponseError, name: str) -> LockConfigConflictError | None:
    """``WRONGTYPE`` from a script: the name is used by another kind of lock object in this namespace."""
    if "WRONGTYPE" not in str(exc):
        return None
    return LockConfigConflictError(
        f"{name!r} is already used by another kind of lock object in this namespace (a lock vs a read-write lock or "
        "semaphore): give each object its own name"
    )


class LocksBase(Generic[L, S, C]):
    """Factory of lock objects over one Redis client and namespace (see :class:`~distkit.locks.Locks`)."""

    lock_class: type[L]
    semaphore_class: type[S]
    # set by the sync / asyncio subclass: the caller's serial and liveness check, and the background workers
    owner_fns: ClassVar[tuple[Callable[[], int], Callable[[], Callable[[], bool]]]]
    async_client: ClassVar[bool]  # which kind of redis-py client the subclass drives
    hub_class: ClassVar[type[Any]]
    watchdog_class: ClassVar[type[Any]]
    runner_class: ClassVar[type[Any]]

    def __init__(
        self,
        client: C,
        namespace: str = "distkit",
        *,
        lease_ms: int | None = None,
        lease_s: float | None = None,
        waiter_ttl_ms: int = 10_000,
        linger_s: float = 2.0,
        call_timeout_s: float = 5.0,
        config_ttl_ms: int = 86_400_000,
    ) -> None:
        _text("namespace", namespace)
        if client is None:
            raise InvalidArgumentError("client is required: pass a redis-py client (Settings.from_env().redis())")
        if is_async_client(client) != self.async_client:  # else the first acquire fails with a bare TypeError
            want, other = ("an asyncio", "Locks") if self.async_client else ("a synchronous", "AsyncLocks")
            raise InvalidArgumentError(f"{type(self).__name__} needs {want} redis-py client, got "
                                       f"{type(client).__name__}: use {other} for this one")
        self.client = client
        self.namespace = namespace
        lease = lease_of(lease_ms, lease_s)
        self.lease_ms = 30_000 if lease is None else _positive_ms("lease_ms", lease)
        self.waiter_ttl_ms = _positive_ms("waiter_ttl_ms", waiter_ttl_ms)
        self.config_ttl_ms = _positive_ms("config_ttl_ms", config_ttl_ms)
        if isinstance(linger_s, bool) or not isinstance(linger_s, int | float) or not linger_s >= 0:
            raise InvalidArgumentError(f"linger_s must be a number of seconds >= 0, got {linger_s!r}")
        if (
            isinstance(call_timeout_s, bool)
            or not isinstance(call_timeout_s, int | float)
            or not 0 < call_timeout_s < math.inf
        ):
            raise InvalidArgumentError(f"call_timeout_s must be a positive number of seconds, got {call_timeout_s!r}")
        self.linger_s = float(linger_s)
        self.call_timeout_s = float(call_timeout_s)
        self.instance_id = uuid.uuid4().hex[:16]
        self.closed = False
        self._new_state()
        _live.add(self)

    def _new_state(self) -> None:
        self.holds = HoldTable()
        self.context = Context(
            self.holds,
            self.lease_ms,
            self.kick_watchdog,
            self.alive,
            self.report_lost,
            lambda: self.closed,
            self.call_timeout_s,
        )
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

    def semaphore(self, name: str, permits: int, *, lease_ms: int | None = None, lease_s: float | None = None) -> S:
        """At most ``permits`` concurrent holders; each permit expires after ``lease_ms`` / ``lease_s`` (None:
        renewed by the watchdog while its thread / task lives). The count is stored with the semaphore in
        Redis: a process configured with another count gets :class:`~distkit.errors.LockConfigConflictError`."""
        if isinstance(permits, bool) or not isinstance(permits, int) or not 0 < permits < 2**53:
            raise InvalidArgumentError(f"permits must be a positive int, got {permits!r}")
        lease = lease_of(lease_ms, lease_s)
        spec = SharedSpec(
            self.namespace,
            self._name(name),
            kind="s",
            limit=permits,
            waiter_ttl_ms=self.waiter_ttl_ms,
            config_ttl_ms=self.config_ttl_ms,
        )
        return self.semaphore_class(self, spec, lease)

    def rw_lock(self, name: str, *, prefer_writers: bool = False) -> ReadWriteLock[L]:
        """A read-write lock; ``prefer_writers=True`` makes a waiting writer stop new readers, so a stream of
        readers cannot starve it. The setting is stored with the lock in Redis while it is held: a process
        using the other setting gets :class:`~distkit.errors.LockConfigConflictError`."""
        if not isinstance(prefer_writers, bool):
            raise InvalidArgumentError(f"prefer_writers must be True or False, got {prefer_writers!r}")
        return ReadWriteLock(self, name, prefer_writers)

    def _shared(self, name: str, kind: str, prefer_writers: bool) -> L:
        spec = SharedSpec(self.namespace, name, kind=kind, limit=int(prefer_writers), waiter_ttl_ms=self.waiter_ttl_ms)
        return self.lock_class(self, spec)

    @staticmethod
    def _name(name: str) -> str:
        return _text("lock name", name)

    # ------------------------------------------------------------------ owners, lifecycle

    def holder(self) -> str:
        """The caller's owner id in Redis: this instance and the calling thread (or task). Pass it to
        ``is_held_by`` from elsewhere to ask whether that owner holds a lock."""
        return f"{self.instance_id}:{self.owner_fns[0]()}"

    def alive(self) -> Callable[[], bool]:
        """The caller's liveness check (its thread's end, or its task's ``done()``)."""
        return self.owner_fns[1]()

    def kick_watchdog(self, hold: Hold) -> None:
        self.watchdog.kick(hold)

    def report_lost(self, hold: Hold) -> None:
        """Call the hold's ``on_lost`` elsewhere (a thread or a task of its own), never on the caller's path."""
        raise NotImplementedError

    def _reset_io(self) -> None:
        """(Re)create the runner, the pub/sub hub and the watchdog (started on first need) and the I/O table."""
        client, ns = self.client, self.namespace
        self.runner = runner = self.runner_class(client, timeout_s=self.call_timeout_s)
        self.hub = hub = self.hub_class(client, f"distkit-locks-pubsub-{ns}", self.linger_s)
        self.watchdog = self.watchdog_class(
            runner, self.holds, self.lease_ms, f"distkit-watchdog-{ns}", self.report_lost
        )
        self._dispatch: dict[type, Callable[[Any], Any]] = {
            Call: lambda op: runner(op.script, op.keys, op.args, deadline=op.deadline),
            Command: lambda op: runner.command(*op.args, deadline=op.deadline),
            Subscribe: lambda op: hub.subscribe(op.channel, op.holder, op.deadline),
            Wait: lambda op: hub.wait(op.waiter, op.seconds),
            Sleep: lambda op: hub.sleep(op.seconds),
            Unsubscribe: lambda op: hub.unsubscribe(op.waiter),
        }

    def execute(self, op: Op) -> Any:
        """Perform one operation of a flow: a value (sync clients) or an awaitable (asyncio clients)."""
        return self._dispatch[type(op)](op)

    def _after_fork_in_child(self) -> None:
        # the child is a different owner: fresh id, no holds, no threads, no sockets shared with the parent
        self.instance_id = uuid.uuid4().hex[:16]
        self._new_state()

    def _check_open(self) -> None:
        if self.closed:
            raise LocksClosedError(f"Locks(namespace={self.namespace!r}) is closed; create a new one")


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

    def __init__(self, locks: LocksBase[Any, Any, Any], spec: Spec) -> None:
        self._locks = locks
        self._spec = spec
        self.on_lost: Callable[[], Any] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._spec.name!r}, kind={self._spec.kind!r})"

    @property
    def name(self) -> str:
        return self._spec.name

    def _deadline(self) -> float:
        return time.monotonic() + self._locks.call_timeout_s


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
        """True once the caller's hold was found gone (``on_lost`` has been or is being called)."""
        hold = self._locks.holds.get(self._spec.hold_key, self._locks.holder())
        return bool(hold and hold.lost)

    def owner(self) -> tuple[str, Callable[[], bool]]:
        """The caller's (owner id, liveness check), taken now."""
        return self._locks.holder(), self._locks.alive()

    def _acquire(
        self,
        blocking: bool,
        timeout: float | None,
        lease_ms: int | None,
        lease_s: float | None = None,
        owner: tuple[str, Callable[[], bool]] | None = None,
    ) -> Flow[bool]:
        locks = self._locks
        locks._check_open()
        lease = lease_ms if lease_s is None else lease_of(lease_ms, lease_s)
        holder, alive = self.owner() if owner is None else owner
        return flows.acquire(
            locks.context, self._spec, holder, alive, self, blocking=blocking, timeout=timeout, lease_ms=lease
        )

    def _release(self, quiet: bool = False, holder: str | None = None) -> Flow[bool]:
        who = self._locks.holder() if holder is None else holder
        return flows.release(self._locks.context, self._spec, who, quiet=quiet)

    def _state(self, owner: str | None = None) -> Flow[tuple[bool, bool]]:
        if owner is not None and not isinstance(owner, str):
            raise InvalidArgumentError(f"owner must be an owner id str (from Locks.holder()), got {owner!r}")
        return self._spec.state(self._locks.holder() if owner is None else owner, self._deadline())

    def _remaining(self) -> Flow[int | None]:
        return self._spec.remaining(self._deadline())

    def _extend(self, lease_ms: int | None, lease_s: float | None) -> Flow[None]:
        lease = lease_of(lease_ms, lease_s)
        if lease is None:
            raise InvalidArgumentError("extend needs lease_ms or lease_s: the new lease, counted from now")
        return flows.extend(self._locks.context, self._spec, self._locks.holder(), lease)

    def _force_unlock(self) -> Flow[bool]:
        reply = yield self._spec.force_call(self._deadline())
        return bool(int(reply))


def check_units(units: Any) -> int:
    if isinstance(units, bool) or not isinstance(units, int) or not 0 < units < 2**53:
        raise InvalidArgumentError(f"the number of permits must be a positive int, got {units!r}")
    return units


class SemaphoreView(_View):
    """Expirable permits (Redisson's ``RPermitExpirableSemaphore``): ``acquire`` returns a permit id that any
    process may ``release``; a permit nobody releases expires after its lease. One permit id may stand for
    several permits (``acquire(3)``)."""

    _spec: SharedSpec

    def __init__(self, locks: LocksBase[Any, Any, Any], spec: SharedSpec, lease_ms: int | None) -> None:
        super().__init__(locks, spec)
        self._lease_ms = lease_ms
        self._entered: dict[str, list[str]] = {}  # holder -> permits taken by ``with``

    @property
    def permits(self) -> int:
        """The permit count this object was configured with (see :meth:`available` for Redis' view)."""
        return self._spec.limit

    @staticmethod
    def _args(blocking: Any, permits: int) -> tuple[bool, int]:
        """``acquire(3)`` means three permits: an int first argument that is not a bool is a permit count."""
        if not isinstance(blocking, bool) and isinstance(blocking, int):
            if permits != 1:
                raise InvalidArgumentError("pass the number of permits once: acquire(3) or acquire(permits=3)")
            return True, check_units(blocking)
        return blocking, check_units(permits)

    def _acquire(
        self,
        blocking: bool,
        timeout: float | None,
        lease_ms: int | None,
        lease_s: float | None = None,
        permits: int = 1,
    ) -> Flow[str | None]:
        locks = self._locks
        locks._check_open()
        blocking, units = self._args(blocking, permits)
        lease = self._lease_ms if lease_ms is None and lease_s is None else lease_of(lease_ms, lease_s)
        permit = uuid.uuid4().hex
        flow = flows.acquire(
            locks.context,
            self._spec,
            permit,
            locks.alive(),
            self,
            blocking=blocking,
            timeout=timeout,
            lease_ms=lease,
            units=units,
        )
        return self._permit_of(flow, permit)

    @staticmethod
    def _permit_of(flow: Flow[bool], permit: str) -> Flow[str | None]:
        ok = yield from flow
        return permit if ok else None

    def _release(self, permit: str, permits: int | None = None) -> Flow[None]:
        if not isinstance(permit, str) or not permit:
            raise InvalidArgumentError(f"release needs the permit id str that acquire returned, got {permit!r}")
        units = 0 if permits is None else check_units(permits)
        return self._release_flow(permit, units)

    def _release_flow(self, permit: str, units: int) -> Flow[None]:
        if self._locks.holds.get(self._spec.hold_key, permit) is not None:
            yield from flows.release(self._locks.context, self._spec, permit, "permit", units=units)
            return
        # a permit taken elsewhere (another process): release it if it is still there
        reply = yield self._spec.release_call(permit, "", 1, self._deadline(), units)
        if isinstance(reply, list | tuple) or int(reply) not in (FREED, PARTIAL):
            raise LockNotOwnedError(f"permit {permit!r} of {self._spec.name!r} is not held (released or expired)")

    def _available(self) -> Flow[int]:
        used, permits, _ = yield from self._spec.usage(self._deadline())
        return max(0, permits - used)

    def _adjust(self, op: str, n: int) -> Flow[int]:
        reply = yield self._spec.adjust_call(op, n, self._deadline())
        status, value = int(reply[0]), reply[1]
        if status == -4:
            stored = value.decode() if isinstance(value, bytes) else str(value)
            raise LockConfigConflictError(
                f"{self._spec.name!r} is configured as {stored!r} in Redis, this object as {self._spec.config!r}"
            )
        if status == -5:
            raise InvalidArgumentError(f"{self._spec.name!r} has {int(value)} permits: cannot remove {-n}")
        return int(value)

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

    def __init__(self, locks: LocksBase[L, Any, Any], name: str, prefer_writers: bool = False) -> None:
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
