"""examples.config_upload over a real socket (uvicorn on 127.0.0.1) against the real PostgreSQL.

Every test starts the service on the ``wiring`` fixture's fresh schema and talks HTTP to it; the server runs
in a thread of this process, so ``tracemalloc`` sees its allocations (and the client's, which stream).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select, text

from distkit.idgen import Snowflake
from examples._wiring import Wiring
from examples.config_upload import main
from examples.config_upload.asgi import ConfigUploadApp
from examples.config_upload.client import file_chunks, template, upload, write_config
from examples.config_upload.serving import config_service, leased_ids, serve
from examples.config_upload.templates import BadLineError, LineSplitter, canonical_line
from examples.config_upload.upload import Limits

MIB = 1024 * 1024
Start = Callable[..., tuple[ConfigUploadApp, httpx.Client]]


@pytest.fixture(scope="module")
def ids(redis_url: str) -> Iterator[Snowflake]:
    """One leased id generator for the module's services, as several instances of a deployment share a lease
    namespace: the first lease of a namespace waits one ttl, paid once here instead of in every test."""
    client = redis.Redis.from_url(redis_url)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    gen = leased_ids(client, namespace)
    yield gen
    gen.close()
    for key in client.scan_iter(match=f"*{namespace}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def start(wiring: Wiring, ids: Snowflake) -> Iterator[Start]:
    """``start(limits)`` -> (app, http client on its base URL); everything is stopped after the test."""
    with ExitStack() as stack:

        def make(limits: Limits | None = None) -> tuple[ConfigUploadApp, httpx.Client]:
            app = stack.enter_context(config_service(wiring, limits, ids))
            url = stack.enter_context(serve(app))
            return app, stack.enter_context(httpx.Client(base_url=url, timeout=60))

        yield make


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def apply(http: httpx.Client, upload_id: str) -> httpx.Response:
    return http.post(f"/config/uploads/{upload_id}/apply")


def staged_and_applied(app: ConfigUploadApp, http: httpx.Client, path: Path, sha256: str) -> str:
    r = upload(http, file_chunks(path), sha256)
    assert r.status_code == 201, r.text
    upload_id: str = r.json()["upload_id"]
    assert apply(http, upload_id).json()["applied"] is True
    return upload_id


def test_main_holds_its_invariants_on_real_servers(wiring: Wiring) -> None:
    story = main(wiring)
    assert story.checks and all(story.checks.values())
    for name in ("live_equals_good_file", "applied_once", "oversized_rejected_413", "bad_line_named_422",
                 "bad_upload_left_live_untouched", "staging_emptied", "upload_memory_bounded"):  # fmt: skip
        assert story.checks[name], name
    assert story.facts["live_templates"] == 4800


@pytest.mark.slow
def test_50_mb_upload_streams_with_bounded_memory(start: Start) -> None:
    # The bound: with the default Limits the upload path holds one socket read (<= 256 KiB) plus uvicorn's
    # 64 KiB buffer, one unfinished line (<= 1 MiB), one batch (<= 256 KiB + one line) in ~4 copies (bytes,
    # parsed str, driver parameters, encoded) and the client's 64 KiB chunk: about 7 MiB at worst (duplicate
    # names are found by the database, not a set in memory). 16 MiB is over 2x that and under a third of the
    # body, so any implementation that buffers the body (>= 50 MiB) fails; measured: about 3 MiB.
    app, http = start(Limits())
    client_sha, sent = hashlib.sha256(), {"bytes": 0, "lines": 0}

    def body() -> Iterator[bytes]:
        chunk = bytearray()
        while sent["bytes"] < 50 * MIB:
            sent["lines"] += 1
            line = canonical_line(*template(sent["lines"], body_chars=6000))
            chunk += line
            sent["bytes"] += len(line)
            if len(chunk) >= 64 * 1024 or sent["bytes"] >= 50 * MIB:
                client_sha.update(chunk)
                yield bytes(chunk)
                chunk.clear()

    tracemalloc.start()
    try:
        r = upload(http, body())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status_code == 201, r.text
    doc = r.json()
    assert sent["bytes"] >= 50 * MIB and doc["bytes"] == sent["bytes"]
    assert doc["templates"] == doc["lines"] == sent["lines"] and doc["sha256"] == client_sha.hexdigest()
    assert app.store.staged_rows(int(doc["upload_id"])) == sent["lines"]
    assert peak < 16 * MIB, f"peak traced memory {peak / MIB:.1f} MiB for a 50 MiB upload"
    print(f"50 MiB upload: {sent['lines']} templates, peak traced memory {peak / MIB:.2f} MiB")
    assert apply(http, doc["upload_id"]).json() == {"upload_id": doc["upload_id"], "applied": True,
                                                      "templates": sent["lines"]}  # fmt: skip
    assert app.store.live_digest() == (sent["lines"], client_sha.hexdigest())
    assert app.store.staged_rows() == 0


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_templates(start: Start) -> None:
    # 30k tiny templates: a dict of every name seen (for the duplicate check) would add ~3.4 MiB; the unique index
    # does that job, so the peak stays at one batch (<= 500 lines) plus one network chunk, well under 4 MiB.
    app, http = start(Limits())
    count = 30_000

    def body() -> Iterator[bytes]:
        chunk = bytearray()
        for i in range(count):
            chunk += canonical_line(f"t{i}", "s", "b")
            if len(chunk) >= 64 * 1024 or i == count - 1:
                yield bytes(chunk)
                chunk.clear()

    tracemalloc.start()
    try:
        r = upload(http, body())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (r.status_code, r.json()["templates"]) == (201, count)
    assert app.store.staged_rows() == count
    assert peak < 4 * MIB, f"peak traced memory {peak / MIB:.1f} MiB for {count} templates"


def test_duplicates_are_named_at_their_line_within_and_across_batches(start: Start) -> None:
    app, http = start(Limits(batch_lines=10))
    lines = [canonical_line(f"n{i}", "s", "b") for i in range(1, 41)]

    def send(replace: dict[int, bytes]) -> Any:
        body = b"".join(replace.get(i, line) for i, line in enumerate(lines, start=1))
        return upload(http, iter([body])).json()

    across = send({27: canonical_line("n4", "s", "b")})  # line 4 was staged two batches earlier
    assert (across["line"], across["detail"]) == (27, "duplicate template name 'n4' (first on line 4)")
    within = send({15: canonical_line("n12", "s", "b")})  # same batch of ten (lines 11-20)
    assert (within["line"], within["detail"]) == (15, "duplicate template name 'n12' (first on line 12)")
    # In one batch a duplicate of an earlier batch (line 23) comes before a broken line (26): 23 is named.
    both = send({23: canonical_line("n2", "s", "b"), 26: b"{broken\n"})
    assert (both["line"], both["detail"]) == (23, "duplicate template name 'n2' (first on line 2)")
    assert app.outcomes == {"bad_line": 3}
    assert app.store.staged_rows() == 0


def test_over_the_limit_is_413_and_leaves_nothing_in_staging(start: Start, tmp_path: Path) -> None:
    app, http = start(Limits(max_bytes=1 * MIB, batch_bytes=64 * 1024))
    big = write_config(tmp_path / "big.jsonl", templates=1100, body_chars=1000)  # ~1.5 MiB, every line valid
    assert big.size > 1 * MIB
    streamed = upload(http, file_chunks(big.path))  # chunked: refused once 1 MiB has streamed in
    assert streamed.status_code == 413
    assert streamed.json() == {"error": "payload too large", "max_bytes": MIB}
    assert app.discarded_rows > 0  # batches had reached the database: the rollback is what emptied staging
    declared = http.post("/config/uploads", content=big.path.read_bytes())  # Content-Length: refused up front
    assert declared.status_code == 413
    assert app.outcomes == {"too_large": 2}
    assert app.store.staged_rows() == 0
    assert app.store.live_digest()[0] == 0


BAD_LINES = {
    "missing field": (b'{"name": "a", "body": "b"}', "missing required field(s): subject"),
    "broken JSON": (b'{"name": "a", "subject": "s", "body": "b"', "not JSON"),
    "invalid UTF-8": (b'{"name": "a", "subject": "\xff", "body": "b"}', "not valid UTF-8"),
    "duplicate name": (canonical_line(*template(5, 100)).rstrip(), "duplicate template name 'mail.order-shipped"),
    "NUL character": (b'{"name": "a", "subject": "s", "body": "x\\u0000y"}', "NUL character"),
    "lone surrogate": (b'{"name": "a", "subject": "s", "body": "\\ud83d"}', "unpaired surrogate"),
    "header injection": (b'{"name": "a", "subject": "s\\r\\nBcc: x@evil", "body": "b"}', "one line"),
    "wrong type": (b'{"name": "a", "subject": "s", "body": 7}', "must be a string, got int"),
    "unknown field": (b'{"name": "a", "subject": "s", "body": "b", "bcc": "x"}', "unknown field(s): bcc"),
    "not an object": (b'["a", "s", "b"]', "expected a JSON object"),
}


def test_a_bad_line_is_422_naming_that_line_and_live_is_untouched(start: Start, tmp_path: Path) -> None:
    app, http = start(Limits(batch_bytes=16 * 1024))  # small batches: rows before the bad line are staged
    good = write_config(tmp_path / "good.jsonl", templates=300, body_chars=500)
    staged_and_applied(app, http, good.path, good.sha256)
    live = app.store.live_digest()
    assert live == (300, good.sha256)
    for kind, (line, reason) in BAD_LINES.items():
        discarded = app.discarded_rows
        bad = write_config(tmp_path / "bad.jsonl", 300, 500, {217: line + b"\n"})
        r = upload(http, file_chunks(bad.path), bad.sha256)
        assert r.status_code == 422, kind
        doc = r.json()
        assert (doc["error"], doc["line"]) == ("invalid line", 217), kind
        assert reason in doc["detail"], (kind, doc["detail"])
        if kind == "duplicate name":
            assert "(first on line 5)" in doc["detail"]
        assert app.store.live_digest() == live, kind
        assert app.store.staged_rows() == 0, kind
        assert app.discarded_rows > discarded, kind  # good lines before 217 had been staged, then rolled back
    assert app.outcomes == {"staged": 1, "bad_line": len(BAD_LINES)}


def test_a_line_over_max_line_bytes_is_named_too(start: Start, tmp_path: Path) -> None:
    app, http = start(Limits(max_line_bytes=4096))
    bad = write_config(tmp_path / "long.jsonl", 20, 500, {13: canonical_line("long", "s", "x" * 10_000)})
    r = upload(http, file_chunks(bad.path, chunk_size=1000))
    assert (r.status_code, r.json()["line"]) == (422, 13)
    assert r.json()["detail"] == "line longer than 4096 bytes"
    assert app.store.staged_rows() == 0


def test_checksum_mismatch_and_empty_file_are_422(start: Start, tmp_path: Path) -> None:
    app, http = start()
    good = write_config(tmp_path / "good.jsonl", templates=50, body_chars=200)
    wrong = hashlib.sha256(b"something else").hexdigest()
    r = upload(http, file_chunks(good.path), wrong)
    assert r.status_code == 422 and r.json()["error"].endswith(f"not {wrong}")
    empty = upload(http, iter([b"\n", b"  \r\n"]))
    assert (empty.status_code, empty.json()) == (422, {"error": "the file holds no template"})
    assert app.outcomes == {"rejected": 2}
    assert app.store.staged_rows() == 0


UNICODE = [
    ("welcome.emoji", "Willkommen 👩‍👩‍👧‍👦 🇯🇵 🏳️‍🌈", "Hi 😀 — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚 and 🤌🏽\n\tend"),  # noqa: RUF001
    ("welcome.cjk", "ご注文ありがとうございます", "您好 {{customer}}，您的订单已发货。한국어 텍스트. 𠀋𡈽𡌛"),  # noqa: RUF001
    ("welcome.rtl", "مرحبا بك", "שלום עולם\u200f — مرحبا\u2028line separator\u2029paragraph"),
    ("welcome.combining", "e\u0301 vs é, Å vs A\u030a", 'Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǵ̗͚̽o̜͙ \ufeffBOM inside, \\ and " quotes'),
]


def test_unicode_round_trips_byte_exactly(start: Start, wiring: Wiring) -> None:
    app, http = start()
    body = b"".join(canonical_line(*t) for t in UNICODE)
    # 7-byte chunks: most multi-byte characters are split across two chunks on the way in.
    r = upload(http, iter([body[i : i + 7] for i in range(0, len(body), 7)]), hashlib.sha256(body).hexdigest())
    assert r.status_code == 201, r.text
    assert apply(http, r.json()["upload_id"]).status_code == 200
    live = app.store.live
    with wiring.engine.connect() as conn:
        rows = conn.execute(select(live.c.name, live.c.subject, live.c.body).order_by(live.c.line_no)).all()
    assert [tuple(row) for row in rows] == UNICODE
    for (name, subject, body_text), row in zip(UNICODE, rows, strict=True):
        assert (row.subject.encode(), row.body.encode()) == (subject.encode(), body_text.encode()), name
    assert app.store.live_digest() == (len(UNICODE), hashlib.sha256(body).hexdigest())


def test_a_client_that_disconnects_mid_upload_leaves_no_staging_rows(start: Start) -> None:
    app, http = start(Limits(batch_bytes=32 * 1024))
    port = httpx.URL(str(http.base_url)).port
    lines = b"".join(canonical_line(*template(i, 1000)) for i in range(1, 801))  # ~1 MiB of valid lines
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /config/uploads HTTP/1.1\r\nHost: test\r\nContent-Length: 10000000\r\n\r\n" + lines)
        wait_for(lambda: any(rows > 0 for rows in app.in_flight.values()), "a batch to reach staging")
        (upload_id,) = app.in_flight
    wait_for(lambda: app.outcomes["disconnected"] == 1, "the server to see the disconnect")
    assert app.discarded_rows > 0
    assert app.store.staged_rows() == 0 and app.in_flight == {}
    assert apply(http, str(upload_id)).status_code == 404


def run_concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` in threads released together by a barrier; their results in order."""
    barrier, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def concurrent_apply(base_url: str, upload_id: str) -> Callable[[], tuple[int, Any]]:
    def call() -> tuple[int, Any]:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            r = apply(client, upload_id)
            json_body = r.headers.get("content-type", "").startswith("application/json")
            return r.status_code, r.json() if json_body else {"applied": None, "text": r.text}

    return call


def race_behind_a_live_lock(
    app: ConfigUploadApp, wiring: Wiring, calls: list[Callable[[], Any]], parked: int
) -> list[Any]:
    """Run ``calls`` at once while another transaction holds every live row, and let go only once ``parked``
    of them wait on a database lock: the overlap is certain, not a matter of timing."""
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE :q")

    def waiters() -> int:  # a fresh transaction each time: pg_stat_activity is a per-transaction snapshot
        with wiring.engine.connect() as probe:
            return int(probe.execute(waiting, {"q": f"%{wiring.namespace}%"}).scalar_one())

    results: list[Any] = []
    with wiring.engine.connect() as holder:
        holder.execute(select(app.store.live).with_for_update())
        racer = threading.Thread(target=lambda: results.extend(run_concurrently(calls)))
        racer.start()
        wait_for(lambda: waiters() >= parked, f"{parked} applies to wait on a lock")
        holder.rollback()
        racer.join(timeout=30)
    return results


def test_eight_concurrent_applies_of_one_id_apply_it_once(start: Start, tmp_path: Path, wiring: Wiring) -> None:
    app, http = start()
    old = write_config(tmp_path / "old.jsonl", templates=50, body_chars=300)
    good = write_config(tmp_path / "good.jsonl", templates=400, body_chars=800)
    staged_and_applied(app, http, old.path, old.sha256)
    upload_id = upload(http, file_chunks(good.path), good.sha256).json()["upload_id"]
    # At least the first apply and one duplicate overlap for sure (uvicorn's worker threads bound how many
    # more are inside the database at once); the barrier releases all eight together.
    results = race_behind_a_live_lock(app, wiring, [concurrent_apply(str(http.base_url), upload_id)] * 8, parked=2)
    assert [status for status, _ in results] == [200] * 8
    assert sum(doc["applied"] for _, doc in results) == 1
    assert sorted(doc.get("detail", "") for _, doc in results)[1:] == ["already applied; nothing changed"] * 7
    assert app.store.live_digest() == (400, good.sha256)
    assert app.store.staged_rows() == 0
    with wiring.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(app.store.inbox.table)) == 2  # old's and this one's
        version = conn.execute(select(app.store.version.c.upload_id, app.store.version.c.rows)).one()
    assert tuple(version) == (int(upload_id), 400)


def test_applies_of_two_uploads_racing_leave_exactly_one_live(start: Start, tmp_path: Path, wiring: Wiring) -> None:
    # Without the version-row lock both applies DELETE the old rows and the second INSERT collides with the
    # first's new rows (a 500): the live lock makes both wait, so they are certain to overlap.
    app, http = start()
    old = write_config(tmp_path / "old.jsonl", 50, 300)
    a = write_config(tmp_path / "a.jsonl", 300, 700)
    b = write_config(tmp_path / "b.jsonl", 200, 900)  # a's first 200 names, other bodies
    staged_and_applied(app, http, old.path, old.sha256)
    ids = [upload(http, file_chunks(f.path), f.sha256).json()["upload_id"] for f in (a, b)]
    results = race_behind_a_live_lock(app, wiring, [concurrent_apply(str(http.base_url), i) for i in ids], parked=2)
    assert [(status, doc["applied"]) for status, doc in results] == [(200, True), (200, True)]
    assert app.store.live_digest() in ((300, a.sha256), (200, b.sha256))
    assert app.store.staged_rows() == 0


def test_a_failed_apply_changes_nothing_and_can_be_retried(start: Start, tmp_path: Path, wiring: Wiring) -> None:
    app, http = start()
    good = write_config(tmp_path / "good.jsonl", templates=100, body_chars=300)
    upload_id = upload(http, file_chunks(good.path), good.sha256).json()["upload_id"]
    live = app.store.live.name
    with wiring.engine.begin() as conn:  # the live table goes missing: the apply fails half-way through
        conn.execute(text(f'ALTER TABLE "{live}" RENAME TO "{live}_away"'))
    r = apply(http, upload_id)
    assert (r.status_code, r.json()) == (500, {"error": "internal error; nothing was changed, retry later"})
    with wiring.engine.begin() as conn:
        conn.execute(text(f'ALTER TABLE "{live}_away" RENAME TO "{live}"'))
    assert app.store.staged_rows(int(upload_id)) == 100  # still staged, and not marked as applied
    assert apply(http, upload_id).json() == {"upload_id": upload_id, "applied": True, "templates": 100}
    assert app.store.live_digest() == (100, good.sha256)


def test_unknown_ids_and_routes(start: Start) -> None:
    _, http = start()
    assert apply(http, "123").status_code == 404
    assert apply(http, "123").json() == {"error": "no staged upload with id 123"}
    for raw in ("abc", "-1", str(2**63), "١٢٣"):
        assert apply(http, raw).status_code == 404, raw
    assert http.get("/config/uploads").status_code == 405
    assert http.post("/config/elsewhere").status_code == 404


def test_line_splitter_cuts_on_bytes_so_split_characters_survive() -> None:
    text = "\u03b1😀\r\n你好\n\nlast".encode()
    splitter = LineSplitter(max_line_bytes=64)
    got = [line for i in range(len(text)) for line in splitter.feed(text[i : i + 1])] + list(splitter.finish())
    assert got == [(1, "\u03b1😀".encode()), (2, "你好".encode()), (3, b""), (4, b"last")]
    long = LineSplitter(max_line_bytes=8)
    assert list(long.feed(b"12345678\n")) == [(1, b"12345678")]
    with pytest.raises(BadLineError) as err:
        list(long.feed(b"123456789"))  # no newline yet, already too long: refused before it grows further
    assert err.value.line_no == 2
    assert json.loads(canonical_line("n", "s", "😀")) == {"name": "n", "subject": "s", "body": "😀"}
