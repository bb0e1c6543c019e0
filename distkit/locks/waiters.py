"""One pub/sub listener per ``Locks``, shared by every blocked acquire (the "hub").

A release publishes on the lock's channel; the hub wakes the waiters of that channel (all of them, or only
the fair queue's head when the message names it). A channel is subscribed when a local waiter first needs
it and kept for ``linger_s`` after its last waiter leaves (a lock contended once is usually contended again:
no SUBSCRIBE round trip then, and no UNSUBSCRIBE on the way out of ``acquire``); the listener unsubscribes
it after that, so a waiter that times out or is cancelled leaves no subscription behind for longer than
``linger_s``. The listener thread / task exits when no channel is left and comes back on demand.

A waiter re-checks the lock right after its subscription is confirmed (a release may have come before it)
and then at least once per lease (the script's hint), so a missed message costs at most a lease.

The pub/sub connection is driven with raw SUBSCRIBE / UNSUBSCRIBE and replies are read raw, so redis-py's
own subscription bookkeeping (not thread-safe against a concurrent reader) is never involved; after a
connection error the hub resubscribes every channel itself and wakes every waiter to re-check.
:class:`SubscriptionBook` holds that bookkeeping and every decision; :class:`Hub` (thread) and
:class:`AsyncHub` (task) do the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distkit.locks.ops import Signal, Waiter

log = logging.getLogger("distkit.locks")
T = TypeVar("T")

ACK_TIMEOUT_S = 2.0  # how long a waiter waits for its SUBSCRIBE to be confirmed before re-checking anyway
POLL_S = 0.25  # listener read timeout: how often it looks at stop / idle
# How long the listener lets the waiters it just woke re-check the lock before it reads again. Its own Python
# would otherwise compete with theirs for the GIL (and a core) exactly when a handoff is under way: measured,
# that doubled the woken waiter's acquire call. Another channel's message waits at most this long.
RECHECK_GRACE_S = 0.002
IO_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def _ack_wait(deadline: float | None) -> float:
    """How long a new waiter waits for its SUBSCRIBE confirmation: ACK_TIMEOUT_S, or less near its deadline."""
    if deadline is None:
        return ACK_TIMEOUT_S
    return max(0.0, min(ACK_TIMEOUT_S, deadline - time.monotonic()))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Channel:
    __slots__ = ("confirmed", "unused_since", "waiters")

    def __init__(self, confirmed: Signal) -> None:
        self.waiters: list[Waiter] = []
        self.confirmed = confirmed
        self.unused_since = 0.0  # when the last waiter left (meaningful while ``waiters`` is empty)


class SubscriptionBook:
    """Which channels are subscribed for which waiters, and which SUBSCRIBE confirmations are pending.

    Not thread-safe by itself: the hub calls it under its lock. No I/O: it says what to send.
    """

    def __init__(self) -> None:
        self.channels: dict[str, _Channel] = {}  # subscribed on the server (with or without waiters)
        self._acks: deque[_Channel] = deque()  # in the order the SUBSCRIBEs went out
        self.waiting = 0  # waiters registered, over every channel

    @property
    def idle(self) -> bool:
        """Nothing subscribed: the listener may stop."""
        return not self.channels

    def join(self, waiter: Waiter, new_signal: Callable[[], Signal]) -> tuple[Signal, bool]:
        """Register a waiter: (the confirmation to wait for, whether SUBSCRIBE must be sent)."""
        state = self.channels.get(waiter.channel)
        new = state is None
        if state is None:
            state = self.channels[waiter.channel] = _Channel(new_signal())
            self._acks.append(state)
        state.waiters.append(waiter)
        self.waiting += 1
        return state.confirmed, new

    def leave(self, waiter: Waiter) -> None:
        """Unregister a waiter; its channel stays subscribed for a while (see :meth:`unused`)."""
        state = self.channels.get(waiter.channel)
        if state is not None and waiter in state.waiters:
            state.waiters.remove(waiter)
            self.waiting -= 1
            if not state.waiters:
                state.unused_since = time.monotonic()

    def unused(self, linger_s: float) -> list[str]:
        """Forget the channels without waiters for ``linger_s``: the hub sends UNSUBSCRIBE for them."""
        cutoff = time.monotonic() - linger_s
        gone = [ch for ch, st in self.channels.items() if not st.waiters and st.unused_since <= cutoff]
        for ch in gone:
            self.channels.pop(ch).confirmed.set()
        return gone

    def dispatch(self, reply: Any) -> list[Waiter]:
        """Handle one raw pub/sub reply: wake waiters on a message (returned), confirm a subscription."""
        if not isinstance(reply, list | tuple) or len(reply) < 3:
            return []
        kind = _text(reply[0])
        woken: list[Waiter] = []
        if kind == "message":
            state = self.channels.get(_text(reply[1]))
            if state is not None:
                payload = _text(reply[2])
                for waiter in state.waiters:
                    if not payload or payload == waiter.holder:
                        waiter.signal.set()
                        woken.append(waiter)
        elif kind == "subscribe" and self._acks:
            state = self._acks.popleft()
            state.confirmed.set()
        return woken

    def subscribe_all(self) -> list[str]:
        """A fresh connection: every channel is subscribed in one SUBSCRIBE, so confirmations arrive in this
        order (a channel joined later is appended by :meth:`join` and sent after it)."""
        self._acks = deque(self.channels.values())
        return list(self.channels)

    def confirm_all(self) -> None:
        """Stop anyone waiting for a confirmation (the connection failed: re-check on the bounded wait)."""
        while self._acks:
            self._acks.popleft().confirmed.set()

    def wake_all(self) -> None:
        for state in self.channels.values():
            for waiter in state.waiters:
                waiter.signal.set()

    def reset(self) -> list[str]:
        """After a reconnect: wake every waiter (messages may have been missed) and return the channels to
        subscribe again."""
        self.confirm_all()
        for state in self.channels.values():
            for waiter in state.waiters:
                waiter.signal.set()
        return list(self.channels)


class _HubBase:
    """State shared by both hubs (no I/O)."""

    def __init__(self, client: Any, name: str, linger_s: float) -> None:
        self.client = client
        self.name = name
        self.linger_s = linger_s
        self.book = SubscriptionBook()
        self._pubsub: Any = None
        self._saved_retry: Any = None
        self._broken = False
        self._stopped = False

    @property
    def subscribed_channels(self) -> set[str]:
        """Channels subscribed on the server right now (including unused ones not yet dropped)."""
        return set(self.book.channels)

    @property
    def waiting(self) -> int:
        """How many acquires are blocked on this hub."""
        return self.book.waiting

    def _should_exit(self) -> bool:
        return self._stopped or self.book.idle

    def _failed(self, exc: BaseException) -> None:
        log.warning("lock wake-up channel: %s; resubscribing", exc)
        self._broken = True
        self.book.confirm_all()

    def _adopt(self, pubsub: Any, no_retry: Any) -> None:
        """Take over a fresh pub/sub connection: errors must surface to the hub, which resubscribes (redis-py
        would silently reconnect without our raw subscriptions)."""
        self._pubsub = pubsub
        conn = pubsub.connection
        self._saved_retry = conn.retry
        conn.retry = no_retry

    def _detach(self) -> Any:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None and pubsub.connection is not None and self._saved_retry is not None:
            pubsub.connection.retry = self._saved_retry
        return pubsub


class Hub(_HubBase):
    """The threaded hub of :class:`~distkit.locks.Locks`."""

    def __init__(self, client: Any, name: str, linger_s: float = 2.0) -> None:
        super().__init__(client, name, linger_s)
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._rechecking: set[Waiter] = set()  # woken by the listener, not yet back in wait() or gone
        self._rechecked = threading.Event()  # ends the listener's hold-back: one of them blocks again, or a new waiter

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def wake_all(self) -> None:
        """Wake every blocked acquire (``close()``: they re-check, see the factory closed and raise)."""
        with self._lock:
            self.book.wake_all()

    def subscribe(self, channel: str, holder: str, deadline: float | None = None) -> Waiter:
        waiter = Waiter(channel, holder, threading.Event())
        try:
            with self._lock:
                confirmed, new = self.book.join(waiter, threading.Event)
                if self._rechecking:  # the listener is holding back: it has a confirmation to read
                    self._rechecked.set()
                if new and self._pubsub is not None:  # no connection yet: the listener connects, then subscribes
                    self._send("SUBSCRIBE", channel)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()
            confirmed.wait(_ack_wait(deadline))  # type: ignore[attr-defined]
        except BaseException:  # interrupted (KeyboardInterrupt): the caller never gets the waiter to leave
            self.unsubscribe(waiter)
            raise
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        with self._lock:
            self.book.leave(waiter)
            # a woken waiter leaving needs nothing more from the listener: it is not woken to read on (waking it
            # now would only compete with this thread on its way out of acquire)
            self._rechecking.discard(waiter)

    def wait(self, waiter: Waiter, seconds: float) -> None:
        with self._lock:
            if waiter in self._rechecking:  # woken, lost the race, blocks again: the listener must read on for it
                self._rechecking.discard(waiter)
                self._rechecked.set()
        waiter.signal.wait(seconds)  # type: ignore[attr-defined]

    def _dispatch(self, reply: Any) -> bool:
        """Under the lock: wake the waiters a reply concerns; True when that was every blocked acquire, so the
        listener holds back (:meth:`_hold_back`) until they have re-checked. With others still blocked it reads
        on at once: their message may be next."""
        woken = self.book.dispatch(reply)
        if not woken or len(woken) != self.book.waiting:
            return False
        self._rechecked.clear()
        self._rechecking.update(woken)
        return True

    def _hold_back(self) -> None:
        """Let the woken waiters re-check before reading again: at most :data:`RECHECK_GRACE_S`, and no longer
        than until one of them blocks again or a new waiter joins (the listener then has a message or a
        SUBSCRIBE confirmation to read for it). Those that took the lock and left do not wake it."""
        self._rechecked.wait(RECHECK_GRACE_S)
        with self._lock:
            self._rechecking.clear()

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)

    def _send(self, *args: str) -> None:
        """Under the lock, on the connection the listener made (never connects: see :meth:`_connect`)."""
        try:
            if self._pubsub is not None and not self._broken:
                self._pubsub.execute_command(*args)
        except IO_ERRORS as exc:
            self._failed(exc)

    def _drop_unused(self) -> None:
        unused = self.book.unused(self.linger_s)
        if unused:
            self._send("UNSUBSCRIBE", *unused)

    def _connect(self) -> Any:
        """In the listener, outside the lock: a new pub/sub connection with every channel subscribed. Connecting
        can take as long as the client's socket timeouts allow (a black-holed server); callers never wait for it
        past their own deadline (``subscribe`` waits for the confirmation at most until then, then polls)."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        with self._lock:
            channels = self.book.subscribe_all()
        pubsub = self.client.pubsub()
        try:
            pubsub.execute_command("SUBSCRIBE", *channels)
        except BaseException:
            with contextlib.suppress(Exception):
                pubsub.reset()
            raise
        with self._lock:
            self._adopt(pubsub, Retry(NoBackoff(), 0))
            joined_meanwhile = [ch for ch in self.book.channels if ch not in channels]
            if joined_meanwhile:
                self._send("SUBSCRIBE", *joined_meanwhile)
        return pubsub

    @staticmethod
    def _read(pubsub: Any) -> Any:
        """The next raw reply, or None after :data:`POLL_S` without one. The connection's own ``can_read`` /
        ``read_response``: ``PubSub.parse_response`` wraps them in a retry call and a health check per reply,
        which cost a blocked waiter a third of its wake-up; the health check (the client's
        ``health_check_interval``) runs when the line is idle instead."""
        conn = pubsub.connection
        if conn is None:
            raise RuntimeError("the pub/sub connection was closed")
        if not conn.can_read(timeout=POLL_S):
            pubsub.check_health()
            return None
        return conn.read_response(disconnect_on_error=False, push_request=True)

    def _close_pubsub(self) -> None:
        pubsub = self._detach()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.reset()

    def _run(self) -> None:
        backoff = 0.05
        while True:
            with self._lock:
                self._drop_unused()
                if self._should_exit():
                    self._close_pubsub()
                    self._thread = None
                    return
                if self._broken:  # wake everyone (messages may be lost), then connect afresh below
                    self._close_pubsub()
                    self.book.reset()
                    self._broken = False
                pubsub = self._pubsub
            try:
                if pubsub is None:
                    pubsub = self._connect()
                reply = self._read(pubsub)
            except (*IO_ERRORS, RuntimeError) as exc:
                with self._lock:
                    self._failed(exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            if reply is not None:
                with self._lock:
                    hold_back = self._dispatch(reply)
                if hold_back:
                    self._hold_back()

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=POLL_S * 4 + 1)
        with self._lock:
            self._close_pubsub()
            self._thread = None


class AsyncHub(_HubBase):
    """The asyncio hub of :class:`~distkit.locks.AsyncLocks`: a listener task in the loop that first waited."""

    def __init__(self, client: Any, name: str, linger_s: float = 2.0) -> None:
        super().__init__(client, name, linger_s)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def wake_all(self) -> None:
        self.book.wake_all()

    async def subscribe(self, channel: str, holder: str, deadline: float | None = None) -> Waiter:
        waiter = Waiter(channel, holder, asyncio.Event())
        joining = self._background(self._join(waiter))
        try:
            confirmed = await asyncio.shield(joining)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(confirmed.wait(), _ack_wait(deadline))  # type: ignore[attr-defined]
        except BaseException:  # cancelled: once the join is through (it is shielded), undo it
            joining.add_done_callback(lambda _: self._background(self._leave(waiter)))
            raise
        return waiter

    async def unsubscribe(self, waiter: Waiter) -> None:
        # shielded: a second cancellation during cleanup must not leave the channel subscribed
        await asyncio.shield(self._background(self._leave(waiter)))

    async def _join(self, waiter: Waiter) -> Signal:
        async with self._lock:  # book and SUBSCRIBE together, so confirmations match the send order
            confirmed, new = self.book.join(waiter, asyncio.Event)
            if new and self._pubsub is not None:  # no connection yet: the listener connects, then subscribes
                await self._send("SUBSCRIBE", waiter.channel)
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)
        return confirmed

    async def _leave(self, waiter: Waiter) -> None:
        async with self._lock:
            self.book.leave(waiter)

    def _background(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A task this hub keeps a reference to until it is done (the loop only keeps weak ones)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, waiter: Waiter, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(waiter.signal.wait(), seconds)  # type: ignore[attr-defined]

    async def _send(self, *args: str) -> None:
        """Under the lock, on the connection the listener made (never connects: see :meth:`_connect`)."""
        try:
            if self._pubsub is not None and not self._broken:
                await self._pubsub.execute_command(*args)
        except IO_ERRORS as exc:
            self._failed(exc)

    async def _drop_unused(self) -> None:
        unused = self.book.unused(self.linger_s)
        if unused:
            await self._send("UNSUBSCRIBE", *unused)

    async def _connect(self) -> Any:
        """In the listener task, outside the lock: see :meth:`Hub._connect`."""
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        async with self._lock:
            channels = self.book.subscribe_all()
        pubsub = self.client.pubsub()
        try:
            await pubsub.execute_command("SUBSCRIBE", *channels)
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            raise
        async with self._lock:
            self._adopt(pubsub, Retry(NoBackoff(), 0))
            joined_meanwhile = [ch for ch in self.book.channels if ch not in channels]
            if joined_meanwhile:
                await self._send("SUBSCRIBE", *joined_meanwhile)
        return pubsub

    async def _close_pubsub(self) -> None:
        pubsub = self._detach()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _run(self) -> None:
        backoff = 0.05
        try:
            while True:
                async with self._lock:
                    await self._drop_unused()
                    if self._should_exit():
                        await self._close_pubsub()
                        return
                    if self._broken:  # wake everyone (messages may be lost), then connect afresh below
                        await self._close_pubsub()
                        self.book.reset()
                        self._broken = False
                    pubsub = self._pubsub
                try:
                    if pubsub is None:
                        pubsub = await self._connect()
                    reply = await pubsub.parse_response(block=False, timeout=POLL_S)
                except (*IO_ERRORS, RuntimeError) as exc:
                    async with self._lock:
                        self._failed(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                backoff = 0.05
                if reply is not None:
                    self.book.dispatch(reply)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def close(self) -> None:
        self._stopped = True
        task = self._task
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, POLL_S * 4 + 1)
        await self._close_pubsub()
        self._task = None
