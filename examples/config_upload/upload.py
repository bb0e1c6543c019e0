"""Streaming one upload into staging with bounded memory: the request body is never held whole.

At any moment the upload path holds one network chunk, one unfinished line (<= ``max_line_bytes``) and one
batch of lines (<= ``batch_bytes`` + one line, <= ``batch_lines`` lines) with its parsed copy on its way to the
database; that is what bounds its memory, whatever the file's size or number of templates. Parsing and
inserting run in a worker thread, so the event loop only splits lines and hashes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from distkit.errors import DistkitError, InvalidArgumentError
from examples.config_upload.staging import StagingWriter
from examples.config_upload.store import ConfigStore
from examples.config_upload.templates import LineSplitter


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 64 * 1024 * 1024
    max_line_bytes: int = 1024 * 1024
    batch_bytes: int = 256 * 1024  # a batch is flushed at whichever of these two comes first
    batch_lines: int = 500


class PayloadTooLargeError(InvalidArgumentError):
    """The body is larger than ``Limits.max_bytes``."""


class ChecksumMismatchError(InvalidArgumentError):
    """The body's sha256 is not the one the client declared."""


class EmptyUploadError(InvalidArgumentError):
    """The file holds no template (only blank lines, or nothing)."""


class ClientDisconnectedError(DistkitError):
    """The client went away before the body was complete."""


@dataclass(frozen=True)
class Staged:
    upload_id: int
    templates: int
    lines: int
    size: int
    sha256: str


async def stage_upload(
    chunks: AsyncIterator[bytes],
    store: ConfigStore,
    upload_id: int,
    limits: Limits,
    expected_sha256: str | None = None,
    progress: Callable[[int], None] = lambda rows: None,
) -> Staged:
    """Stream ``chunks`` into staging under ``upload_id``; commit only if the whole file is valid.

    Raises :class:`~examples.config_upload.templates.BadLineError`, :class:`PayloadTooLargeError`,
    :class:`ChecksumMismatchError`, :class:`EmptyUploadError` or :class:`ClientDisconnectedError`; in every
    case the staged rows are rolled back. ``progress(rows)`` is told after each batch reaches the database.
    """
    writer = await asyncio.to_thread(StagingWriter, store, upload_id)
    splitter, digest, size = LineSplitter(limits.max_line_bytes), hashlib.sha256(), 0
    batch: list[tuple[int, bytes]] = []
    batch_size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limits.max_bytes:
                raise PayloadTooLargeError(f"upload larger than {limits.max_bytes} bytes")
            digest.update(chunk)
            for line in splitter.feed(chunk):
                batch.append(line)
                batch_size += len(line[1])
                if batch_size >= limits.batch_bytes or len(batch) >= limits.batch_lines:
                    await asyncio.to_thread(writer.write, batch)
                    progress(writer.rows)
                    batch, batch_size = [], 0
        batch.extend(splitter.finish())
        await asyncio.to_thread(writer.write, batch)
        del batch
        if writer.rows == 0:
            raise EmptyUploadError("the file holds no template")
        if expected_sha256 is not None and expected_sha256.lower() != digest.hexdigest():
            raise ChecksumMismatchError(f"sha256 of the body is {digest.hexdigest()}, not {expected_sha256}")
        await asyncio.to_thread(writer.commit)
    except BaseException:
        await asyncio.shield(asyncio.to_thread(writer.abort))
        raise
    return Staged(upload_id, writer.rows, splitter.line_no, size, digest.hexdigest())
