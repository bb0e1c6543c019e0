"""Sagas: a business transaction across services as a sequence of local transactions, each undone by its
compensation when a later one fails. Durable (every state change logged before its side effect), resumable
after a crash, with local, SQL (exactly-once) and remote (command/reply over a broker) steps. See docs/saga.md.

>>> from distkit.saga import MemorySagaLog, Saga, SagaCoordinator, SagaStatus, Step
>>> done = []
>>> saga = Saga("demo", steps=[Step("a", action=lambda ctx: done.append("a"), compensate=lambda ctx: done.append("-a")),
...                           Step("b", action=lambda ctx: 1 / 0)])
>>> with SagaCoordinator(MemorySagaLog()) as coord:
...     result = coord.run(saga, saga_id="demo-1")
>>> result.status is SagaStatus.COMPENSATED, done
(True, ['a', '-a'])
"""

from typing import TYPE_CHECKING

from distkit._lazy import lazy_getattr
from distkit.saga.coordinator import SagaCoordinator, SagaEvent, SagaResult
from distkit.saga.fence import FenceDecision
from distkit.saga.flows import SagaStatus, StepState
from distkit.saga.log.base import SagaLog, SagaRecord
from distkit.saga.log.memory import MemorySagaLog
from distkit.saga.remote import Command, Reply, parse_command, reply_for
from distkit.saga.saga import RemoteStep, RetryPolicy, Saga, SqlStep, Step, StepContext

if TYPE_CHECKING:
    from distkit.saga.fence import SqlFence
    from distkit.saga.log.sql import SqlSagaLog

__getattr__ = lazy_getattr(__name__, {"SqlSagaLog": "distkit.saga.log.sql", "SqlFence": "distkit.saga.fence"})

__all__ = [
    "Command",
    "FenceDecision",
    "MemorySagaLog",
    "RemoteStep",
    "Reply",
    "RetryPolicy",
    "Saga",
    "SagaCoordinator",
    "SagaEvent",
    "SagaLog",
    "SagaRecord",
    "SagaResult",
    "SagaStatus",
    "SqlFence",
    "SqlSagaLog",
    "SqlStep",
    "Step",
    "StepContext",
    "StepState",
    "parse_command",
    "reply_for",
]
