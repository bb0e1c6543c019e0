"""The HTTP endpoint as a plain ASGI callable (no web framework): two routes, JSON bodies.

``POST /config/uploads``               stream the body into staging -> 201 ``{"upload_id": "..."}``,
                                       413 over the size limit, 422 naming the failing line.
``POST /config/uploads/{id}/apply``    200 (``"applied": false`` when it was applied before), 404 unknown id.

Upload ids are sent as strings: 63-bit ids do not fit a JavaScript number.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from examples.config_upload.store import ConfigStore, UnknownUploadError
from examples.config_upload.templates import BadLineError
from examples.config_upload.upload import (
    ChecksumMismatchError,
    ClientDisconnectedError,
    EmptyUploadError,
    Limits,
    PayloadTooLargeError,
    stage_upload,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
APPLY = re.compile(r"/config/uploads/([^/]+)/apply")
log = logging.getLogger(__name__)


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as it arrives (uvicorn pauses reading the socket while we are busy)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError("the client disconnected mid-upload")
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def respond(send: Send, status: int, doc: dict[str, Any]) -> None:
    body = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ConfigUploadApp:
    """Metrics an operator would export (the tests wait on them too): ``outcomes`` counts finished uploads by
    result, ``in_flight`` maps each running upload to the rows it has staged so far, and ``discarded_rows``
    counts rows that failed uploads had staged before their transaction was rolled back."""

    def __init__(self, store: ConfigStore, new_id: Callable[[], int], limits: Limits | None = None) -> None:
        self.store, self.new_id, self.limits = store, new_id, limits or Limits()
        self.outcomes: Counter[str] = Counter()
        self.in_flight: dict[int, int] = {}
        self.discarded_rows = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.route(scope, receive, tracked)
        except Exception:  # e.g. the database is down: still a JSON answer, and the cause in the log
            log.exception("config upload request %s %s failed", scope["method"], scope["path"])
            if not started:
                await respond(send, 500, {"error": "internal error; nothing was changed, retry later"})

    async def route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        match = APPLY.fullmatch(path)
        if path != "/config/uploads" and match is None:
            await respond(send, 404, {"error": "not found"})
        elif method != "POST":
            await respond(send, 405, {"error": "use POST"})
        elif match is None:
            await self.upload(scope, receive, send)
        else:
            await self.apply(match[1], send)

    async def upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limits.max_bytes:  # refused before reading a byte
            self.outcomes["too_large"] += 1
            await respond(send, 413, {"error": "payload too large", "max_bytes": self.limits.max_bytes})
            return
        expected = headers.get(b"x-content-sha256")
        upload_id = self.new_id()
        self.in_flight[upload_id] = 0
        too_large = {"error": "payload too large", "max_bytes": self.limits.max_bytes}
        try:
            staged = await stage_upload(
                body_chunks(receive), self.store, upload_id, self.limits,
                expected.decode("latin-1") if expected else None,
                progress=lambda rows: self.in_flight.__setitem__(upload_id, rows),
            )  # fmt: skip
            outcome, status, doc = "staged", 201, {
                "upload_id": str(upload_id), "templates": staged.templates, "lines": staged.lines,
                "bytes": staged.size, "sha256": staged.sha256,
            }  # fmt: skip
        except ClientDisconnectedError:
            outcome, status, doc = "disconnected", 0, {}  # nobody to answer
        except PayloadTooLargeError:
            outcome, status, doc = "too_large", 413, too_large
        except BadLineError as exc:
            outcome, status, doc = "bad_line", 422, {"error": "invalid line", "line": exc.line_no, "detail": exc.reason}
        except (ChecksumMismatchError, EmptyUploadError) as exc:
            outcome, status, doc = "rejected", 422, {"error": str(exc)}
        finally:
            rows = self.in_flight.pop(upload_id)
        # Metrics first, answer last: whoever reads the answer sees the metrics already updated.
        self.discarded_rows += 0 if outcome == "staged" else rows  # rolled back by stage_upload
        self.outcomes[outcome] += 1
        if status:
            await respond(send, status, doc)

    async def apply(self, raw_id: str, send: Send) -> None:
        if not (raw_id.isascii() and raw_id.isdigit()) or int(raw_id) >= 2**63:
            await respond(send, 404, {"error": f"no staged upload with id {raw_id!r}"})
            return
        try:
            result = await asyncio.to_thread(self.store.apply, int(raw_id))
        except UnknownUploadError as exc:
            await respond(send, 404, {"error": str(exc)})
            return
        doc: dict[str, Any] = {"upload_id": raw_id, "applied": result.applied}
        if result.applied:
            doc["templates"] = result.rows
        else:
            doc["detail"] = "already applied; nothing changed"
        await respond(send, 200, doc)
