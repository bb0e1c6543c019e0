"""The client side: generating a config file of e-mail templates and uploading it in chunks.

The file is written with :func:`~examples.config_upload.templates.canonical_line`, so its sha256 equals the
live table's digest once it is applied: a byte-exact round trip is one comparison.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from examples.config_upload.templates import canonical_line

GREETINGS = ("Bonjour", "こんにちは", "你好", "Grüß Gott", "مرحبا", "Olá 👋", "Hej 🇸🇪", "Привет")


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    templates: int
    size: int
    sha256: str


def template(i: int, body_chars: int) -> tuple[str, str, str]:
    """A deterministic template with multi-byte text (CJK, RTL, emoji) in subject and body."""
    hello = GREETINGS[i % len(GREETINGS)]
    paragraph = f"{hello} {{{{customer}}}}, votre commande n°{i} 📦 est en route — 注文番号 {i}.\n"
    body = (paragraph * (body_chars // len(paragraph) + 1))[:body_chars]
    return f"mail.order-shipped.{i:06d}", f"{hello}: commande n°{i} expédiée ✉️", body


def write_config(path: Path, templates: int, body_chars: int, bad: dict[int, bytes] | None = None) -> ConfigFile:
    """Write ``templates`` lines to ``path``; ``bad`` replaces given 1-based lines with other bytes."""
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as f:
        for line_no in range(1, templates + 1):
            line = (bad or {}).get(line_no) or canonical_line(*template(line_no, body_chars))
            f.write(line)
            digest.update(line)
            size += len(line)
    return ConfigFile(path, templates, size, digest.hexdigest())


def file_chunks(path: Path, chunk_size: int = 64 * 1024, repeat: int = 1) -> Iterator[bytes]:
    """The file's bytes in chunks (``repeat`` times over), never the whole file at once."""
    for _ in range(repeat):
        with path.open("rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk


def upload(http: httpx.Client, chunks: Iterator[bytes], sha256: str | None = None) -> httpx.Response:
    """``POST /config/uploads`` with a chunked (streamed) body."""
    headers = {"content-type": "application/x-ndjson"}
    if sha256:
        headers["x-content-sha256"] = sha256
    return http.post("/config/uploads", content=chunks, headers=headers)
