"""The story: upload a good config, apply it (twice), then an oversized and a bad one, and check the live table."""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path

import httpx

from examples._story import Story
from examples._wiring import Wiring
from examples.config_upload.client import file_chunks, upload, write_config
from examples.config_upload.serving import config_service, serve
from examples.config_upload.upload import Limits

MIB = 1024 * 1024
LIMITS = Limits(max_bytes=16 * MIB, max_line_bytes=256 * 1024, batch_bytes=256 * 1024)
# What the upload path may hold at once (module doc of upload.py): one network chunk (<= 256 KiB), one
# unfinished line (<= 256 KiB) and one batch (<= 256 KiB + one line) with its decoded/parsed/driver copies (~4x):
# about 2.5 MiB. 6 MiB leaves room for that and is half the 12 MiB file: buffering the body would not pass.
PEAK_BOUND = 6 * MIB


def main(wiring: Wiring | None = None) -> Story:
    w = wiring or Wiring.from_env()
    story = Story("config_upload: a large config streamed into staging, validated, applied exactly once")
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            config_service(w, LIMITS) as app,
            serve(app) as url,
            httpx.Client(base_url=url, timeout=60) as http,
        ):
            good = write_config(Path(tmp) / "good.jsonl", templates=4800, body_chars=2000)
            story.step(f"generated {good.templates} e-mail templates, {good.size / MIB:.1f} MiB; serving at {url}")
            tracemalloc.start()
            try:
                r = upload(http, file_chunks(good.path), good.sha256)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            upload_id = r.json()["upload_id"]
            staged = app.store.staged_rows(int(upload_id))
            story.step(f"POST /config/uploads -> {r.status_code}, staging id {upload_id}, {staged} rows staged, "
                       f"peak traced memory {peak / MIB:.2f} MiB")  # fmt: skip
            first = http.post(f"/config/uploads/{upload_id}/apply")
            again = http.post(f"/config/uploads/{upload_id}/apply")
            story.step(f"apply -> {first.status_code} {first.json()}; again -> {again.status_code} {again.json()}")
            live_count, live_sha = app.store.live_digest()

            big_file = write_config(Path(tmp) / "big.jsonl", templates=6800, body_chars=2000)
            big = upload(http, file_chunks(big_file.path))
            story.step(f"a {big_file.size / MIB:.1f} MiB upload (limit {LIMITS.max_bytes // MIB} MiB) -> "
                       f"{big.status_code} {big.json()}")  # fmt: skip
            bad_line = 1234
            missing_subject = b'{"name": "x", "body": "no subject"}\n'
            bad = write_config(Path(tmp) / "bad.jsonl", 4800, 2000, {bad_line: missing_subject})
            rejected = upload(http, file_chunks(bad.path), bad.sha256)
            story.step(f"a file whose line {bad_line} lacks 'subject' -> {rejected.status_code} {rejected.json()}")
            after = app.store.live_digest()
            leftover = app.store.staged_rows()

        story.fact("file_mib", round(good.size / MIB, 2))
        story.fact("upload_peak_mib", round(peak / MIB, 2))
        story.fact("live_templates", live_count)
        story.check("upload_staged", r.status_code == 201 and staged == good.templates, f"{staged} rows")
        story.check("applied_once", first.json()["applied"] is True and again.json()["applied"] is False,
                    "the second apply changed nothing and said so")  # fmt: skip
        story.check("live_equals_good_file", (live_count, live_sha) == (good.templates, good.sha256),
                    f"{live_count} rows, sha256 {live_sha[:12]}… = file's")  # fmt: skip
        story.check("oversized_rejected_413", big.status_code == 413)
        story.check("bad_line_named_422", rejected.status_code == 422 and rejected.json().get("line") == bad_line)
        story.check("bad_upload_left_live_untouched", after == (live_count, live_sha))
        story.check("staging_emptied", leftover == 0, f"{leftover} staged rows left")
        bound = f"peak {peak / MIB:.2f} MiB < {PEAK_BOUND // MIB} MiB for a {good.size / MIB:.1f} MiB file"
        story.check("upload_memory_bounded", peak < PEAK_BOUND, bound)
    finally:
        if wiring is None:
            w.close()
    return story.finish()
