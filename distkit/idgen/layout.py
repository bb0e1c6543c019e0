"""Bit layouts of 64-bit ids: sign bit + timestamp + datacenter + worker + sequence.

>>> SNOWFLAKE.encode(ts=5, datacenter=1, worker=7, sequence=3) == (5 << 22) | (1 << 17) | (7 << 12) | 3
True
>>> decode(SNOWFLAKE.encode(ts=5, datacenter=1, worker=7, sequence=3), layout=SNOWFLAKE, epoch_ms=0)
IdParts(timestamp_ms=5, datacenter_id=1, worker_id=7, sequence=3)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple

from distkit.errors import InvalidEpochError, InvalidIdError, InvalidLayoutError

TWITTER_EPOCH_MS = 1288834974657  # 2010-11-04T01:42:54.657Z, Twitter Snowflake's epoch
DEFAULT_EPOCH_MS = TWITTER_EPOCH_MS


class IdParts(NamedTuple):
    """The fields of a decoded id; ``timestamp_ms`` is unix milliseconds (epoch already added)."""

    timestamp_ms: int
    datacenter_id: int
    worker_id: int
    sequence: int

    @property
    def datetime(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, tz=dt.timezone.utc)


@dataclass(frozen=True)
class Layout:
    """Field widths in bits. With the sign bit they must total 64; ``timestamp_bits`` >= 1, the rest >= 0."""

    timestamp_bits: int = 41
    datacenter_bits: int = 5
    worker_bits: int = 5
    sequence_bits: int = 12

    def __post_init__(self) -> None:
        fields = {
            "timestamp_bits": self.timestamp_bits,
            "datacenter_bits": self.datacenter_bits,
            "worker_bits": self.worker_bits,
            "sequence_bits": self.sequence_bits,
        }
        for name, value in fields.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidLayoutError(f"Layout.{name} must be an int >= 0, got {value!r}")
        if self.timestamp_bits < 1:
            raise InvalidLayoutError("Layout.timestamp_bits must be >= 1: an id needs a time component")
        total = sum(fields.values())
        if total != 63:
            raise InvalidLayoutError(f"Layout bits must total 63 (+1 sign bit = 64), got {total}: {fields}")

    @property
    def worker_shift(self) -> int:
        return self.sequence_bits

    @property
    def datacenter_shift(self) -> int:
        return self.sequence_bits + self.worker_bits

    @property
    def timestamp_shift(self) -> int:
        return self.sequence_bits + self.worker_bits + self.datacenter_bits

    @property
    def max_sequence(self) -> int:
        return (1 << self.sequence_bits) - 1

    @property
    def max_worker_id(self) -> int:
        return (1 << self.worker_bits) - 1

    @property
    def max_datacenter_id(self) -> int:
        return (1 << self.datacenter_bits) - 1

    @property
    def max_timestamp(self) -> int:
        """The largest timestamp offset (ms since the epoch) the field can hold."""
        return (1 << self.timestamp_bits) - 1

    @property
    def ids_per_ms(self) -> int:
        """The cap of one worker: ``2 ** sequence_bits`` ids per millisecond."""
        return 1 << self.sequence_bits

    def encode(self, *, ts: int, datacenter: int, worker: int, sequence: int) -> int:
        """Pack fields (``ts`` = ms since the epoch). Callers validate ranges; this is the hot path."""
        return (
            (ts << self.timestamp_shift)
            | (datacenter << self.datacenter_shift)
            | (worker << self.worker_shift)
            | sequence
        )

    def split(self, value: int) -> tuple[int, int, int, int]:
        """``(ts, datacenter, worker, sequence)`` of an id (``ts`` relative to the epoch)."""
        return (
            value >> self.timestamp_shift,
            (value >> self.datacenter_shift) & self.max_datacenter_id,
            (value >> self.worker_shift) & self.max_worker_id,
            value & self.max_sequence,
        )

    def exhausts_at(self, epoch_ms: int) -> dt.datetime:
        """When the timestamp field runs out for ``epoch_ms``."""
        return dt.datetime.fromtimestamp((epoch_ms + self.max_timestamp + 1) / 1000, tz=dt.timezone.utc)


SNOWFLAKE = Layout(timestamp_bits=41, datacenter_bits=5, worker_bits=5, sequence_bits=12)
BUTTERFLY = Layout(timestamp_bits=41, datacenter_bits=0, worker_bits=13, sequence_bits=9)
LAYOUTS = {"snowflake": SNOWFLAKE, "butterfly": BUTTERFLY}


def decode(value: int, layout: Layout = SNOWFLAKE, epoch_ms: int = DEFAULT_EPOCH_MS) -> IdParts:
    """Decode an id made with ``layout`` and ``epoch_ms``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 1 << 63:
        raise InvalidIdError(f"an id is a non-negative 63-bit int (0 <= id < 2**63), got {value!r}")
    if not isinstance(layout, Layout):
        raise InvalidLayoutError(f"layout must be a distkit.idgen.Layout, got {type(layout).__name__}")
    check_epoch(epoch_ms)
    ts, dc, worker, seq = layout.split(value)
    return IdParts(timestamp_ms=ts + epoch_ms, datacenter_id=dc, worker_id=worker, sequence=seq)


def check_epoch(epoch_ms: object) -> int:
    """``epoch_ms`` as an int (unix ms), or :class:`~distkit.errors.InvalidEpochError`."""
    if not isinstance(epoch_ms, int) or isinstance(epoch_ms, bool) or epoch_ms < 0:
        raise InvalidEpochError(f"epoch_ms must be an int >= 0 (unix milliseconds), got {epoch_ms!r}")
    return epoch_ms
