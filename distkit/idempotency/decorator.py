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
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from distkit import _metrics
from distkit.errors import (
    BackendUnavailableError,
    CodecError,
    IdempotencyClaimLostError,
    IdempotencyKeyError,
    IdempotencyStoredFailureError,
    IdempotencyStoreError,
    IdempotencyUnstorableResultError,
    InvalidArgumentError,
)
from distkit.idempotency.cache import CachedRecord, LocalCache
from distkit.idempotency.codec import ResultCodec, TaggedJsonCodec, resolve_type, type_name
from distkit.idempotency.record import (
    BeginResult,
    IdempotencyRecord,
    Outcome,
    StoredOutcome,
    check_payload,
    in_progress_error,
    payload_hash,
    short,
)

if TYPE_CHECKING:
    from distkit.idempotency.stores.base import IdempotencyStore

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
KeySpec = str | Callable[..., Any]
ResponseHook = Callable[[Any, IdempotencyRecord], Any]

try:  # an outage as the client reports it, until every store path raises BackendUnavailableError
    import redis as _redis

    _CLIENT_OUTAGES: tuple[type[BaseException], ...] = (_redis.ConnectionError, _redis.TimeoutError, OSError)
except ImportError:  # pragma: no cover - distkit without the redis extra
    _CLIENT_OUTAGES = (OSError,)


_HITS = _metrics.counter("distkit.idempotency.hits", "1", "duplicates answered with the stored result (replays)")
_MISSES = _metrics.counter("distkit.idempotency.misses", "1", "first runs: the handler ran under a new claim")
_IN_PROGRESS = _metrics.counter(
    "distkit.idempotency.in_progress", "1", "duplicates refused (IdempotencyInProgressError) while the first ran"
)


def is_outage(exc: BaseException) -> bool:
    """The store could not be reached (the ``on_store_error`` policy applies), as opposed to a bad request."""
    return isinstance(exc, (BackendUnavailableError, *_CLIENT_OUTAGES))


class _Step(enum.Enum):
    RUN = "run"
    RETURN = "return"
    WAIT = "wait"


def _lookup(obj: Any, part: str) -> Any:
    if isinstance(obj, Mapping):
        return obj[part]
    return getattr(obj, part)


def key_text(value: Any, source: str) -> str:
    """The key as text; ``None``, empty or blank keys are refused (never ``scope:None`` / ``scope:``)."""
    if value is None:
        raise IdempotencyKeyError(
            f"{source} gave no idempotency key (None); every message needs one: refusing rather than letting "
            "unrelated messages share the key 'None'"
        )
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IdempotencyKeyError(f"{source} gave a bytes key that is not UTF-8: {exc}") from exc
    text = value if isinstance(value, str) else str(value)
    if not text.strip():
        raise IdempotencyKeyError(
            f"{source} gave an empty idempotency key ({text!r}); every message needs one: refusing rather than "
            "letting unrelated messages share it"
        )
    return text


def key_resolver(fn: Callable[..., Any], spec: KeySpec) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
    """``key=callable`` gets the handler's arguments; ``key="order_id"`` names an argument, or an attribute /
    mapping path (``"msg.headers.event-id"``; the first part may be omitted for a one-argument handler)."""
    if callable(spec):
        source = f"key function {getattr(spec, '__qualname__', repr(spec))}"
        return lambda args, kwargs: key_text(spec(*args, **kwargs), source)
    if not isinstance(spec, str) or not spec:
        raise InvalidArgumentError("key must be a callable or a non-empty argument/attribute path")
    sig = inspect.signature(fn)
    parts = spec.split(".")
    source = f"key path {spec!r}"
    head, tail = parts[0], parts[1:]
    positional = [
        p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    index = positional.index(head) if head in positional else -1  # the fast path: no Signature.bind per call

    def resolve(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if 0 <= index < len(args):
            obj, rest = args[index], tail
        elif index >= 0 and head in kwargs:
            obj, rest = kwargs[head], tail
        else:
            bound = sig.bind(*args, **kwargs).arguments
            if head in bound:
                obj, rest = bound[head], tail
            elif len(bound) >= 1:
                obj, rest = next(iter(bound.values())), parts
            else:
                raise IdempotencyKeyError(f"key path {spec!r}: {fn.__qualname__} has no argument to read it from")
        try:
            for part in rest:
                obj = _lookup(obj, part)
        except (KeyError, AttributeError, TypeError) as exc:
            raise IdempotencyKeyError(f"key path {spec!r} not found in the call's arguments: {exc!r}") from exc
        return key_text(obj, source)

    return resolve


def _add_note(exc: BaseException, note: str) -> None:
    add = getattr(exc, "add_note", None)  # Python 3.11+
    if add is not None:
        add(note)


class _Guard:
    """Everything the sync and async wrappers share."""

    def __init__(
        self,
        fn: Callable[..., Any],
        store: IdempotencyStore,
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
        local_cache: LocalCache | None = None,
        response_hook: ResponseHook | None = None,
    ) -> None:
        if ttl_s <= 0 or in_progress_ttl_s <= 0:
            raise InvalidArgumentError("ttl_s and in_progress_ttl_s must be > 0")
        if on_store_error not in ("raise", "run"):
            raise InvalidArgumentError(f"on_store_error must be 'raise' or 'run', got {on_store_error!r}")
        if local_cache is not None and not isinstance(local_cache, LocalCache):
            raise InvalidArgumentError("local_cache must be a distkit.idempotency.LocalCache (or None)")
        self.fn = fn
        self.store = store
        self.resolve_key = key_resolver(fn, key)
        self.ttl_ms = int(ttl_s * 1000)
        self.in_progress_ttl_ms = int(in_progress_ttl_s * 1000)
        self.payload = payload
        self.codec: ResultCodec = codec or TaggedJsonCodec()
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.store_exceptions = store_exceptions
        self.on_store_error = on_store_error
        self.scope = scope if scope is not None else f"{fn.__module__}.{fn.__qualname__}"
        self.cache = local_cache
        self.response_hook = response_hook
        self.check_key: Callable[[str], None] | None = getattr(store, "check_key", None)
        self.requires_utf8 = bool(getattr(store, "requires_utf8", False))
        h = f"{fn.__module__}.{fn.__qualname__}"  # the handler (code), never the key: bounded cardinality
        self.attrs: dict[str, dict[str, str]] = {
            "handler": {"handler": h},
            "local": {"handler": h, "source": "local_cache"},
            "store": {"handler": h, "source": "store"},
            "claimed": {"handler": h, "claim": "new"},
            "reclaimed": {"handler": h, "claim": "reclaimed"},
        }

    # ------------------------------------------------------------------ before the store

    def prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str, str]:
        raw = self.resolve_key(args, kwargs)
        key = f"{self.scope}:{raw}" if self.scope else raw
        if self.check_key is not None:
            self.check_key(key)  # e.g. too long for the SQL column: refused before anything runs
        digest = payload_hash(self.payload(*args, **kwargs)) if self.payload is not None else ""
        return key, digest, os.urandom(16).hex()  # the owner token: 128 random bits, like a uuid4

    def cached(self, key: str, digest: str) -> tuple[bool, Any]:
        """(True, value) when the local cache answers a duplicate; raises a stored failure."""
        if self.cache is None:
            return False, None
        rec = self.cache.get(key)
        if rec is None:
            return False, None
        check_payload(key, rec.payload_hash, digest)
        stored = StoredOutcome.from_envelope(self.codec.decode(rec.result))
        _HITS.add(1, self.attrs["local"])
        return True, self.replay(key, stored, rec)

    # ------------------------------------------------------------------ the store's answer

    def decide(self, key: str, res: BeginResult, digest: str, deadline: float) -> tuple[_Step, Any]:
        if res.outcome is not Outcome.CLAIMED:
            check_payload(key, res.payload_hash, digest)
        if res.must_run:
            if res.outcome is Outcome.RECLAIMED:
                log.warning(
                    "idempotency key %s: reclaimed a stale in-progress record (previous owner presumed dead)",
                    short(key),
                )
            _MISSES.add(1, self.attrs["reclaimed" if res.outcome is Outcome.RECLAIMED else "claimed"])
            return _Step.RUN, None
        if res.outcome is Outcome.COMPLETED:
            assert res.result is not None
            stored = StoredOutcome.from_envelope(self.codec.decode(res.result))
            if self.cache is not None:
                self.cache.put(key, res.payload_hash, res.result, res.ttl_left_ms)
            _HITS.add(1, self.attrs["store"])
            return _Step.RETURN, (stored, res)
        if time.monotonic() < deadline:
            return _Step.WAIT, None
        _IN_PROGRESS.add(1, self.attrs["handler"])
        raise in_progress_error(key, res, self.in_progress_ttl_ms)

    def replay(self, key: str, stored: StoredOutcome, source: BeginResult | CachedRecord) -> Any:
        """The stored result (through ``response_hook``), or the stored failure raised again."""
        if stored.ok:
            if self.response_hook is not None:
                if isinstance(source, BeginResult):
                    record = IdempotencyRecord(key, source.payload_hash, source.ttl_left_ms, False)
                else:
                    left = int((source.expires_at - time.monotonic()) * 1000)
                    record = IdempotencyRecord(key, source.payload_hash, left, True)
                return self.response_hook(stored.value, record)
            return stored.value
        if stored.unstorable:
            raise IdempotencyUnstorableResultError(
                f"key {short(key)}: the handler already ran once, but its result could not be stored "
                f"({stored.error_message}); it was not run again. Return a type the codec supports"
            )
        raise self.rebuild(stored)

    def _stored_exception_class(self, stored: StoredOutcome) -> type[BaseException] | None:
        name = stored.error_type
        for exc_type in self.store_exceptions:  # exact class first (also finds classes defined in functions)
            if name in (exc_type.__qualname__, f"{exc_type.__module__}:{exc_type.__qualname__}"):
                return exc_type
        if ":" in name:  # a subclass of a listed exception, found by name
            try:
                cls = resolve_type(name)
            except (ImportError, AttributeError, ValueError):
                return None
            if isinstance(cls, type) and issubclass(cls, self.store_exceptions):
                return cls
        return None

    def rebuild(self, stored: StoredOutcome) -> BaseException:
        """The stored exception as its own type: built like ``pickle`` restores state (``args`` and the instance
        ``__dict__``) without calling ``__init__``, so constructors with several or computed arguments replay
        faithfully; :class:`IdempotencyStoredFailureError` (carrying the original) when that is impossible."""
        args = stored.error_args if stored.error_args is not None else (stored.error_message,)
        cls = self._stored_exception_class(stored)
        if cls is not None:
            exc: BaseException | None = None
            try:
                exc = cls.__new__(cls, *args)
                exc.args = args
            except Exception:
                try:
                    exc = cls(*args)
                except Exception:
                    exc = None
            if exc is not None:
                try:
                    exc.__dict__.update(stored.error_attrs)
                except (AttributeError, TypeError):
                    pass
                return exc
        return IdempotencyStoredFailureError(
            f"stored failure {stored.error_type}: {stored.error_message} (it could not be rebuilt as its own type; "
            "list the class in store_exceptions)",
            error_type=stored.error_type,
            error_message=stored.error_message,
            error_args=tuple(args),
        )

    # ------------------------------------------------------------------ what the handler produced

    def encode_value(self, key: str, value: Any) -> tuple[bytes, IdempotencyUnstorableResultError | None]:
        """The bytes to store, and the error to raise after storing when the value cannot be encoded: the
        handler has run, so the record is completed with an 'unstorable' note instead (duplicates must not run
        the side effect again)."""
        try:
            blob = self.codec.encode(StoredOutcome(ok=True, value=value).envelope())
            if self.requires_utf8:
                blob.decode("utf-8")
            return blob, None
        except (CodecError, UnicodeDecodeError, TypeError, ValueError) as exc:
            reason = f"{type(value).__name__}: {exc}"
            err = IdempotencyUnstorableResultError(
                f"key {short(key)}: the handler ran but its result cannot be stored ({reason}); duplicates will get "
                "this error instead of running again. Return a type the codec supports (see TaggedJsonCodec) or "
                "pass another codec"
            )
            err.result = value  # type: ignore[attr-defined]
            note = StoredOutcome(ok=False, error_type="unstorable", error_message=reason, unstorable=True)
            return self.codec.encode(note.envelope()), err

    def encode_failure(self, exc: BaseException) -> bytes:
        try:
            name = type_name(type(exc))
        except CodecError:
            name = type(exc).__qualname__  # a class defined in a function: matched by qualname on replay
        args: tuple[Any, ...] | None = tuple(exc.args)
        try:
            self.codec.encode(list(exc.args))
        except Exception:
            args = None
        attrs: dict[str, Any] = {}
        for k, v in getattr(exc, "__dict__", {}).items():
            if k.startswith("__"):
                continue
            try:
                self.codec.encode(v)
            except Exception:
                continue
            attrs[k] = v
        stored = StoredOutcome(ok=False, error_type=name, error_message=str(exc), error_args=args, error_attrs=attrs)
        try:
            return self.codec.encode(stored.envelope())
        except Exception:
            return self.codec.encode(StoredOutcome(ok=False, error_type=name, error_message=str(exc)).envelope())

    # ------------------------------------------------------------------ when the store fails

    def begin_failed(self, exc: Exception) -> bool:
        """True → run the handler unguarded (``on_store_error="run"``); otherwise raise."""
        if not is_outage(exc):
            raise exc  # a bad request or a bug, not an outage: never run unguarded for it
        if self.on_store_error == "run":
            log.warning("idempotency store unreachable (%r); running WITHOUT the guard (on_store_error='run')", exc)
            return True
        raise IdempotencyStoreError(
            f"idempotency store unreachable before the handler ran: {exc}; the handler did not run "
            "(pass on_store_error='run' to run unguarded instead)"
        ) from exc

    def complete_failed(self, exc: Exception, key: str, value: Any) -> Any:
        """The handler ran and returned ``value`` but storing it failed."""
        if is_outage(exc) and self.on_store_error == "run":
            log.warning(
                "idempotency key %s: the handler ran but its result was not stored (%r); returning it "
                "(on_store_error='run'); a redelivery after in_progress_ttl_s=%g s would run it again",
                short(key),
                exc,
                self.in_progress_ttl_ms / 1000,
            )
            return value
        err = IdempotencyStoreError(
            f"key {short(key)}: the handler RAN (its return value is on this error's .result) but the idempotency "
            f"store failed while saving the result: {exc}; the record stays in progress, so a redelivery is refused "
            f"until in_progress_ttl_s={self.in_progress_ttl_ms / 1000:g} s have passed and then runs the handler again"
        )
        err.result = value  # type: ignore[attr-defined]
        raise err from exc

    def cleanup_failed(self, handler_exc: BaseException, store_exc: Exception, what: str) -> None:
        """Releasing the claim (or storing a failure) failed after the handler raised: the handler's exception
        stays the one the caller sees; the store's failure is logged and noted on it."""
        log.warning("idempotency store failed during %s after the handler raised %r: %r", what, handler_exc, store_exc)
        _add_note(
            handler_exc,
            f"distkit.idempotency: the {what} after this failure also failed ({store_exc!r}); the key stays in "
            f"progress until in_progress_ttl_s={self.in_progress_ttl_ms / 1000:g} s have passed",
        )

    def claim_lost(self, key: str, value: Any) -> IdempotencyClaimLostError:
        err = IdempotencyClaimLostError(
            f"key {short(key)}: this run took longer than in_progress_ttl_s={self.in_progress_ttl_ms / 1000:g} and "
            "another caller reclaimed it; this result was NOT stored (the other run's will be)"
        )
        err.result = value  # type: ignore[attr-defined]
        return err

    def completed(self, key: str, digest: str, blob: bytes, unstorable: Exception | None, value: Any) -> Any:
        if unstorable is not None:
            raise unstorable
        if self.cache is not None:
            self.cache.put(key, digest, blob, self.ttl_ms)
        return value


def idempotent(
    store: IdempotencyStore,
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
    local_cache: LocalCache | None = None,
    response_hook: ResponseHook | None = None,
) -> Callable[[F], F]:
    """Make a handler idempotent on ``key``. Works on ``def`` and ``async def`` handlers.

    >>> @idempotent(store, key=lambda msg: msg.headers["event-id"], payload=lambda msg: msg.value)  # doctest: +SKIP
    ... def handle(msg): ...

    * The first call runs and stores the result (``ttl_s``); duplicates return it without running.
    * A key that is ``None``, empty or blank raises :class:`~distkit.errors.IdempotencyKeyError` (so is one the
      store cannot hold); the handler does not run.
    * A duplicate while the first is running raises :class:`~distkit.errors.IdempotencyInProgressError`,
      or waits up to ``wait_s`` for the result.
    * The handler raises → the claim is removed so a retry runs again; exceptions listed in
      ``store_exceptions`` (and their subclasses) are instead stored and raised again to duplicates.
    * A result the codec cannot encode: the handler ran, so the record is completed anyway and the caller and
      every duplicate get :class:`~distkit.errors.IdempotencyUnstorableResultError` — the side effect never
      runs twice.
    * A claim older than ``in_progress_ttl_s`` is reclaimed by exactly one caller; the original run, if it
      finishes later, raises :class:`~distkit.errors.IdempotencyClaimLostError` and stores nothing.
    * Same key with a different ``payload`` → :class:`~distkit.errors.IdempotencyKeyMismatchError`.
    * Store unreachable → :class:`~distkit.errors.IdempotencyStoreError`, or run unguarded with
      ``on_store_error="run"``.
    * ``local_cache=LocalCache(...)`` answers duplicates of records this process has seen completed without a
      store round trip; ``response_hook(value, record)`` is applied to every replayed value (never to a first
      run), e.g. to mark a response as a replay.
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
            local_cache,
            response_hook,
        )
        if inspect.iscoroutinefunction(fn):
            return cast(F, _async_wrapper(fn, guard))
        if getattr(store, "is_async", False):  # else the first call fails inside with a bare TypeError
            raise InvalidArgumentError(
                f"{getattr(fn, '__qualname__', fn)!r} is a plain function but its store is on an asyncio Redis "
                "client: give it a store on a sync client (or make the function async)"
            )
        return cast(F, _sync_wrapper(fn, guard))

    return decorate


def _sync_wrapper(fn: Callable[..., Any], g: _Guard) -> Callable[..., Any]:
    store = g.store

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        key, digest, token = g.prepare(args, kwargs)
        hit, value = g.cached(key, digest)
        if hit:
            return value
        deadline = time.monotonic() + g.wait_s
        while True:
            try:
                res = store.begin(key, token, digest, g.in_progress_ttl_ms, g.ttl_ms)
            except Exception as exc:
                if g.begin_failed(exc):
                    return fn(*args, **kwargs)
            step, stored = g.decide(key, res, digest, deadline)
            if step is not _Step.WAIT:
                break
            time.sleep(g.poll_s)
        if step is _Step.RETURN:
            return g.replay(key, *stored)
        try:
            value = fn(*args, **kwargs)
        except g.store_exceptions as exc:
            try:
                store.complete(key, token, g.encode_failure(exc), g.ttl_ms)
            except Exception as store_exc:
                g.cleanup_failed(exc, store_exc, "storing the failure")
            raise
        except BaseException as exc:
            try:
                store.release(key, token)
            except Exception as store_exc:
                g.cleanup_failed(exc, store_exc, "release of the claim")
            raise
        blob, unstorable = g.encode_value(key, value)
        try:
            stored_ok = store.complete(key, token, blob, g.ttl_ms)
        except Exception as exc:
            return g.complete_failed(exc, key, value)
        if not stored_ok:
            raise g.claim_lost(key, value)
        return g.completed(key, digest, blob, unstorable, value)

    return call


def _async_wrapper(fn: Callable[..., Any], g: _Guard) -> Callable[..., Any]:
    store = g.store

    async def op(name: str, *a: Any) -> Any:
        if getattr(store, "is_async", False):
            return await getattr(store, f"a{name}")(*a)
        return await asyncio.to_thread(getattr(store, name), *a)

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        key, digest, token = g.prepare(args, kwargs)
        hit, value = g.cached(key, digest)
        if hit:
            return value
        deadline = time.monotonic() + g.wait_s
        while True:
            try:
                res = await op("begin", key, token, digest, g.in_progress_ttl_ms, g.ttl_ms)
            except Exception as exc:
                if g.begin_failed(exc):
                    return await fn(*args, **kwargs)
            step, stored = g.decide(key, res, digest, deadline)
            if step is not _Step.WAIT:
                break
            await asyncio.sleep(g.poll_s)
        if step is _Step.RETURN:
            return g.replay(key, *stored)
        try:
            value = await fn(*args, **kwargs)
        except g.store_exceptions as exc:
            try:
                await op("complete", key, token, g.encode_failure(exc), g.ttl_ms)
            except Exception as store_exc:
                g.cleanup_failed(exc, store_exc, "storing the failure")
            raise
        except BaseException as exc:
            try:
                await op("release", key, token)
            except Exception as store_exc:
                g.cleanup_failed(exc, store_exc, "release of the claim")
            raise
        blob, unstorable = g.encode_value(key, value)
        try:
            stored_ok = await op("complete", key, token, blob, g.ttl_ms)
        except Exception as exc:
            return g.complete_failed(exc, key, value)
        if not stored_ok:
            raise g.claim_lost(key, value)
        return g.completed(key, digest, blob, unstorable, value)

    return call
