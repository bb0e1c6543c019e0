"""``@idempotent``: run a handler once per idempotency key; duplicates get the stored result.

The decision logic lives in :class:`_Guard` (no I/O); the sync and async wrappers only call the store and
the handler in the order it says.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, cast

from distkit.errors import (
    CodecError,
    IdempotencyClaimLostError,
    IdempotencyError,
    IdempotencyStoreError,
    InvalidArgumentError,
)
from distkit.idempotency.codec import JsonCodec, ResultCodec
from distkit.idempotency.record import (
    BeginResult,
    Outcome,
    StoredOutcome,
    check_payload,
    in_progress_error,
    payload_hash,
)

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
KeySpec = str | Callable[..., Any]


class _Step(enum.Enum):
    RUN = "run"
    RETURN = "return"
    WAIT = "wait"


def _lookup(obj: Any, part: str) -> Any:
    if isinstance(obj, Mapping):
        return obj[part]
    return getattr(obj, part)


def key_resolver(fn: Callable[..., Any], spec: KeySpec) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
    """``key=callable`` gets the handler's arguments; ``key="order_id"`` names an argument, or an attribute /
    mapping path (``"msg.headers.event-id"``; the first part may be omitted for a one-argument handler)."""
    if callable(spec):
        return lambda args, kwargs: str(spec(*args, **kwargs))
    if not isinstance(spec, str) or not spec:
        raise InvalidArgumentError("key must be a callable or a non-empty argument/attribute path")
    sig = inspect.signature(fn)
    parts = spec.split(".")

    def resolve(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        bound = sig.bind(*args, **kwargs).arguments
        if parts[0] in bound:
            obj, rest = bound[parts[0]], parts[1:]
        elif len(bound) >= 1:
            obj, rest = next(iter(bound.values())), parts
        else:
            raise InvalidArgumentError(f"key path {spec!r}: {fn.__qualname__} has no argument to read it from")
        try:
            for part in rest:
                obj = _lookup(obj, part)
        except (KeyError, AttributeError, TypeError) as exc:
            raise InvalidArgumentError(f"key path {spec!r} not found in the call's arguments: {exc!r}") from exc
        if obj is None or obj == "":
            raise InvalidArgumentError(f"key path {spec!r} resolved to an empty key")
        return str(obj)

    return resolve


class _Guard:
    """Everything the sync and async wrappers share."""

    def __init__(
        self,
        fn: Callable[..., Any],
        store: Any,
        key: KeySpec,
        ttl_s: float,
        in_progress_ttl_s: float,
        payload: Callable[..., Any] | None,
        codec: ResultCodec | None,
        wait_s: float,
        poll_s: float,
        store_exceptions: tuple[type[BaseException], ...],
        on_store_error: str,
        scope: str | None = None,
    ) -> None:
        if ttl_s <= 0 or in_progress_ttl_s <= 0:
            raise InvalidArgumentError("ttl_s and in_progress_ttl_s must be > 0")
        if on_store_error not in ("raise", "run"):
            raise InvalidArgumentError(f"on_store_error must be 'raise' or 'run', got {on_store_error!r}")
        self.fn = fn
        self.store = store
        self.resolve_key = key_resolver(fn, key)
        self.ttl_ms = int(ttl_s * 1000)
        self.in_progress_ttl_ms = int(in_progress_ttl_s * 1000)
        self.payload = payload
        self.codec: ResultCodec = codec or JsonCodec()
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.store_exceptions = store_exceptions
        self.on_store_error = on_store_error
        self.scope = scope if scope is not None else f"{fn.__module__}.{fn.__qualname__}"

    def prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str, str]:
        key = f"{self.scope}:{self.resolve_key(args, kwargs)}" if self.scope else self.resolve_key(args, kwargs)
        digest = payload_hash(self.payload(*args, **kwargs)) if self.payload is not None else ""
        return key, digest, uuid.uuid4().hex

    def decide(self, key: str, res: BeginResult, digest: str, deadline: float) -> tuple[_Step, Any]:
        if res.outcome is not Outcome.CLAIMED:
            check_payload(key, res.payload_hash, digest)
        if res.must_run:
            if res.outcome is Outcome.RECLAIMED:
                log.warning(
                    "idempotency key %r: reclaimed a stale in-progress record (previous owner presumed dead)", key
                )
            return _Step.RUN, None
        if res.outcome is Outcome.COMPLETED:
            assert res.result is not None
            return _Step.RETURN, StoredOutcome.from_envelope(self.codec.decode(res.result))
        if time.monotonic() < deadline:
            return _Step.WAIT, None
        raise in_progress_error(key, res, self.in_progress_ttl_ms)

    def replay(self, stored: StoredOutcome) -> Any:
        """The stored result, or the stored failure raised again."""
        if stored.ok:
            return stored.value
        for exc_type in self.store_exceptions:
            if exc_type.__qualname__ == stored.error_type:
                raise exc_type(stored.error_message)
        raise IdempotencyError(f"stored failure {stored.error_type}: {stored.error_message}")

    def encode_value(self, value: Any) -> bytes:
        return self.codec.encode(StoredOutcome(ok=True, value=value).envelope())

    def encode_failure(self, exc: BaseException) -> bytes:
        return self.codec.encode(
            StoredOutcome(ok=False, error_type=type(exc).__qualname__, error_message=str(exc)).envelope()
        )

    def store_failed(self, exc: Exception, what: str) -> bool:
        """True → run the handler unguarded (``on_store_error="run"``); otherwise raise."""
        if isinstance(exc, IdempotencyError | CodecError | InvalidArgumentError):
            raise exc
        if self.on_store_error == "run":
            log.warning(
                "idempotency store failed during %s (%r); running WITHOUT the guard (on_store_error='run')", what, exc
            )
            return True
        raise IdempotencyStoreError(
            f"idempotency store failed during {what}: {exc!r}; the handler did not run "
            "(pass on_store_error='run' to run unguarded instead)"
        ) from exc

    def claim_lost(self, key: str, value: Any) -> IdempotencyClaimLostError:
        err = IdempotencyClaimLostError(
            f"key {key!r}: this run took longer than in_progress_ttl_s={self.in_progress_ttl_ms / 1000:g} and "
            "another caller reclaimed it; this result was NOT stored (the other run's will be)"
        )
        err.result = value  # type: ignore[attr-defined]
        return err


def idempotent(
    store: Any,
    *,
    key: KeySpec,
    ttl_s: float = 86_400,
    in_progress_ttl_s: float = 60,
    payload: Callable[..., Any] | None = None,
    codec: ResultCodec | None = None,
    wait_s: float = 0.0,
    poll_s: float = 0.05,
    store_exceptions: tuple[type[BaseException], ...] = (),
    on_store_error: Literal["raise", "run"] = "raise",
    scope: str | None = None,
) -> Callable[[F], F]:
    """Make a handler idempotent on ``key``. Works on ``def`` and ``async def`` handlers.

    >>> @idempotent(store, key=lambda msg: msg.headers["event-id"], payload=lambda msg: msg.value)  # doctest: +SKIP
    ... def handle(msg): ...

    * The first call runs and stores the result (``ttl_s``); duplicates return it without running.
    * A duplicate while the first is running raises :class:`~distkit.errors.IdempotencyInProgressError`,
      or waits up to ``wait_s`` for the result.
    * The handler raises → the claim is removed so a retry runs again; exceptions listed in
      ``store_exceptions`` are instead stored and raised again to duplicates.
    * A claim older than ``in_progress_ttl_s`` is reclaimed by exactly one caller; the original run, if it
      finishes later, raises :class:`~distkit.errors.IdempotencyClaimLostError` and stores nothing.
    * Same key with a different ``payload`` → :class:`~distkit.errors.IdempotencyKeyMismatchError`.
    * Store unreachable → :class:`~distkit.errors.IdempotencyStoreError`, or run unguarded with
      ``on_store_error="run"``.
    * Keys are scoped per handler (``scope`` defaults to ``module.qualname``) so two handlers never share a
      record; pass the same ``scope`` to several handlers (or ``""``) to make them share keys.
    """

    def decorate(fn: F) -> F:
        guard = _Guard(
            fn,
            store,
            key,
            ttl_s,
            in_progress_ttl_s,
            payload,
            codec,
            wait_s,
            poll_s,
            tuple(store_exceptions),
            on_store_error,
            scope,
        )
        if inspect.iscoroutinefunction(fn):
            return cast(F, _async_wrapper(fn, guard))
        return cast(F, _sync_wrapper(fn, guard))

    return decorate


def _sync_wrapper(fn: Callable[..., Any], g: _Guard) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        key, digest, token = g.prepare(args, kwargs)
        deadline = time.monotonic() + g.wait_s
        while True:
            try:
                res = g.store.begin(key, token, digest, g.in_progress_ttl_ms, g.ttl_ms)
            except Exception as exc:
                if g.store_failed(exc, "begin"):
                    return fn(*args, **kwargs)
            step, stored = g.decide(key, res, digest, deadline)
            if step is not _Step.WAIT:
                break
            time.sleep(g.poll_s)
        if step is _Step.RETURN:
            return g.replay(stored)
        try:
            value = fn(*args, **kwargs)
            blob = g.encode_value(value)
        except g.store_exceptions as exc:
            failure = g.encode_failure(exc)
            _finish(g, lambda: g.store.complete(key, token, failure, g.ttl_ms))
            raise
        except BaseException:
            _finish(g, lambda: g.store.release(key, token))
            raise
        if _finish(g, lambda: g.store.complete(key, token, blob, g.ttl_ms)) is False:
            raise g.claim_lost(key, value)
        return value

    return call


def _finish(g: _Guard, op: Callable[[], bool]) -> bool | None:
    try:
        return op()
    except Exception as exc:
        g.store_failed(exc, "complete/release")
        return None


def _async_wrapper(fn: Callable[..., Any], g: _Guard) -> Callable[..., Any]:
    store = g.store

    async def op(name: str, *a: Any) -> Any:
        if getattr(store, "is_async", False):
            return await getattr(store, f"a{name}")(*a)
        return await asyncio.to_thread(getattr(store, name), *a)

    async def finish(name: str, *a: Any) -> bool | None:
        try:
            return bool(await op(name, *a))
        except Exception as exc:
            g.store_failed(exc, "complete/release")
            return None

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        key, digest, token = g.prepare(args, kwargs)
        deadline = time.monotonic() + g.wait_s
        while True:
            try:
                res = await op("begin", key, token, digest, g.in_progress_ttl_ms, g.ttl_ms)
            except Exception as exc:
                if g.store_failed(exc, "begin"):
                    return await fn(*args, **kwargs)
            step, stored = g.decide(key, res, digest, deadline)
            if step is not _Step.WAIT:
                break
            await asyncio.sleep(g.poll_s)
        if step is _Step.RETURN:
            return g.replay(stored)
        try:
            value = await fn(*args, **kwargs)
            blob = g.encode_value(value)
        except g.store_exceptions as exc:
            failure = g.encode_failure(exc)
            await finish("complete", key, token, failure, g.ttl_ms)
            raise
        except BaseException:
            await finish("release", key, token)
            raise
        if await finish("complete", key, token, blob, g.ttl_ms) is False:
            raise g.claim_lost(key, value)
        return value

    return call
