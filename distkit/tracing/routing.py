"""Route SQLAlchemy sessions to the database the request context names (the seed's "DB split" problem).

Built on SQLAlchemy's own sharding hooks (:class:`sqlalchemy.ext.horizontal_shard.ShardedSession`): the
shard comes from :func:`~distkit.tracing.current_request_context` (``shard=`` by default), so it follows the
request into :class:`~distkit.tracing.ContextExecutor` tasks, asyncio tasks and Kafka consumers (baggage).
A shard may have read replicas: reads go to a replica until the request writes to that shard, then stay on
its primary for the rest of the request (read-your-writes), in every task of the request.

    router = ShardRouter({"db_1": engine_1, "db_2": Shard(primary=engine_2, replicas=[replica_2])})
    Session = router.sessionmaker()
    with request_context(shard="db_2"), Session() as s:
        s.add(Order(id=1)); s.commit()        # primary of db_2
        s.get(Order, 1)                        # still the primary: this request wrote to db_2
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.horizontal_shard import ShardedSession
from sqlalchemy.orm import ORMExecuteState, sessionmaker

from distkit.errors import ShardNotSelectedError
from distkit.tracing.context import current_request_state

_REPLICA = "@replica"


@dataclass(frozen=True)
class Shard:
    """One logical database: a primary and optional read replicas."""

    primary: Engine
    replicas: Sequence[Engine] = field(default_factory=tuple)


class ShardRouter:
    """Chooses the bind of each statement from the request context (``context_key``, default ``"shard"``).

    ``default``: the shard to use when the context names none; without it such a statement raises
    :class:`~distkit.errors.ShardNotSelectedError` instead of silently writing to some database."""

    def __init__(
        self, shards: Mapping[str, Engine | Shard], *, context_key: str = "shard", default: str | None = None
    ) -> None:
        if not shards:
            raise ShardNotSelectedError("ShardRouter needs at least one shard")
        self.shards: dict[str, Shard] = {
            name: s if isinstance(s, Shard) else Shard(primary=s) for name, s in shards.items()
        }
        if default is not None and default not in self.shards:
            raise ShardNotSelectedError(f"default shard {default!r} is not one of {sorted(self.shards)}")
        self.context_key = context_key
        self.default = default
        self._binds: dict[str, Engine] = {}
        self._replica_ids: dict[str, itertools.cycle[str]] = {}
        for name, shard in self.shards.items():
            self._binds[name] = shard.primary
            ids = []
            for i, replica in enumerate(shard.replicas):
                rid = f"{name}{_REPLICA}{i}"
                self._binds[rid] = replica
                ids.append(rid)
            if ids:
                self._replica_ids[name] = itertools.cycle(ids)

    def current_shard(self) -> str:
        """The shard named by the request context (or the default); raises if there is none."""
        state = current_request_state()
        name = state.values.get(self.context_key, self.default)
        if name is None:
            raise ShardNotSelectedError(
                f"no {self.context_key!r} in the request context and no default shard: wrap the work in "
                f"request_context({self.context_key}=...) or pass default= to ShardRouter"
            )
        name = str(name)
        if name not in self.shards:
            raise ShardNotSelectedError(f"request context names shard {name!r}, not one of {sorted(self.shards)}")
        return name

    def _write_target(self) -> str:
        name = self.current_shard()
        current_request_state().written.add(name)
        return name

    def _read_target(self) -> str:
        name = self.current_shard()
        if name in current_request_state().written or name not in self._replica_ids:
            return name
        return next(self._replica_ids[name])

    # ShardedSession hooks ----------------------------------------------------------------------------
    def _shard_chooser(self, mapper: Any, instance: Any, clause: Any = None) -> str:
        return self._write_target()  # called when an object is flushed: a write

    def _identity_chooser(self, mapper: Any, primary_key: Any, **kw: Any) -> Iterable[str]:
        return [self._read_target()]

    def _execute_chooser(self, orm_context: ORMExecuteState) -> Iterable[str]:
        if orm_context.is_select:
            return [self._read_target()]
        return [self._write_target()]

    def sessionmaker(self, **kwargs: Any) -> sessionmaker[ShardedSession]:
        """A ``sessionmaker`` of sessions routed by this router (``kwargs`` go to ``sessionmaker``)."""
        return sessionmaker(
            class_=ShardedSession,
            shards=self._binds,
            shard_chooser=self._shard_chooser,
            identity_chooser=self._identity_chooser,
            execute_chooser=self._execute_chooser,
            **kwargs,
        )

    def engine(self) -> Engine:
        """The engine a Core statement of this request should write to (for code without an ORM session)."""
        return self._binds[self._write_target()]
