"""Reference app: a large config (e-mail templates as JSON Lines) streamed into a staging table over a plain
ASGI endpoint, validated line by line, and applied into the live table exactly once."""

from __future__ import annotations

from examples.config_upload.demo import main

__all__ = ["main"]
