"""The saga log: every state change of every saga, written before the side effect it announces."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from distkit.saga.flows import SagaStatus

if TYPE_CHECKING:
    from distkit.saga.remote import Reply


@dataclass(frozen=True)
class SagaRecord:
    """One saga as the log holds it. ``version`` increases with every write (compare-and-set)."""

    saga_id: str
    name: str
    status: SagaStatus
    payload: dict[str, Any]
    steps: list[dict[str, Any]]
    owner: str | None
    lease_until_ms: int
    version: int
    error: str | None = None
    created_ms: int = 0
    updated_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> SagaRecord:
        return replace(self, **changes)

    def step(self, name: str) -> dict[str, Any]:
        for s in self.steps:
            if s["name"] == name:
                return s
        raise KeyError(name)


def dumps(value: Any) -> str:
    """JSON for the log. Values JSON can't hold are written as their ``str`` (documented): a result that
    can't be stored never turns a finished side effect into a retried one."""
    return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


class SagaLog(Protocol):
    """Where sagas are persisted. Every write is a compare-and-set on ``version``: a coordinator that lost
    its lease (another one took the saga over) gets :class:`~distkit.errors.SagaOwnershipLostError`."""

    def create(self, record: SagaRecord) -> bool:
        """Insert a new saga; ``False`` when ``saga_id`` already exists (nothing written)."""

    def get(self, saga_id: str) -> SagaRecord | None: ...

    def claim(self, saga_id: str, owner: str, now_ms: int, lease_ms: int) -> SagaRecord | None:
        """Take a non-terminal saga whose lease has run out (or is ``owner``'s already); ``None`` otherwise."""

    def write(self, record: SagaRecord, *, connection: Any = None) -> SagaRecord:
        """Store ``record`` if the log still holds ``record.version - 1`` owned by ``record.owner``."""

    def renew(self, owner: str, saga_ids: Sequence[str], until_ms: int) -> None:
        """Extend the lease of ``owner``'s sagas (the heartbeat)."""

    def expired(self, now_ms: int, limit: int = 1000) -> list[str]:
        """Ids of non-terminal sagas whose lease has run out (their coordinator died)."""

    def find(self, status: SagaStatus | None = None, limit: int = 100) -> list[SagaRecord]: ...

    def record_reply(self, reply: Reply) -> bool:
        """Store a remote step's reply; ``False`` for a duplicate (the first one counts)."""

    def get_reply(self, saga_id: str, step: str, kind: str, attempt: int) -> Reply | None: ...

    def transaction(self) -> AbstractContextManager[Any]:
        """A transaction whose connection a :class:`~distkit.saga.SqlStep` action and the log write share."""

