"""What a config file is: JSON Lines of e-mail templates, cut into lines and validated one line at a time.

Validation happens per line so that a 50 MB file never has to be in memory, and so that an error can name
the exact (1-based, physical) line that failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from distkit.errors import InvalidArgumentError

FIELDS = ("name", "subject", "body")
NAME_MAX = 200
SUBJECT_MAX = 998  # RFC 5322's hard limit for one header line


class BadLineError(InvalidArgumentError):
    """A line of the upload is not a valid template; ``line_no`` is its 1-based line number in the file."""

    def __init__(self, line_no: int, reason: str) -> None:
        super().__init__(f"line {line_no}: {reason}")
        self.line_no = line_no
        self.reason = reason


@dataclass(frozen=True)
class Template:
    line_no: int
    name: str
    subject: str
    body: str


def canonical_line(name: str, subject: str, body: str) -> bytes:
    """The one serialisation a client should use: the live table's digest is the sha256 of these lines."""
    doc = {"name": name, "subject": subject, "body": body}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def parse_line(line_no: int, raw: bytes) -> Template:
    """One template from one line, or :class:`BadLineError` saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLineError(line_no, f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadLineError(line_no, f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(doc, dict):
        raise BadLineError(line_no, f"expected a JSON object, got {type(doc).__name__}")
    missing = [f for f in FIELDS if f not in doc]
    if missing:
        raise BadLineError(line_no, f"missing required field(s): {', '.join(missing)}")
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        raise BadLineError(line_no, f"unknown field(s): {', '.join(unknown)}")
    for field in FIELDS:
        value = doc[field]
        if not isinstance(value, str):
            raise BadLineError(line_no, f"field {field!r} must be a string, got {type(value).__name__}")
        if "\x00" in value:
            raise BadLineError(line_no, f"field {field!r} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate written as a \ud8xx escape
            raise BadLineError(line_no, f"field {field!r} contains an unpaired surrogate") from None
    name, subject = doc["name"], doc["subject"]
    if not name.strip() or len(name) > NAME_MAX:
        raise BadLineError(line_no, f"field 'name' must be 1..{NAME_MAX} characters, not blank")
    if len(subject) > SUBJECT_MAX or "\r" in subject or "\n" in subject:
        raise BadLineError(line_no, f"field 'subject' must be one line of at most {SUBJECT_MAX} characters")
    return Template(line_no, name, subject, doc["body"])


class LineSplitter:
    """Cuts a byte stream into lines, holding at most one unfinished line (at most ``max_line_bytes``).

    Lines are cut on the byte ``\\n`` before decoding, so a multi-byte character split across two network
    chunks is never decoded in halves. A trailing ``\\r`` (CRLF files) is dropped.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.line_no = 0
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        """The complete lines that ``chunk`` finishes, as ``(line_no, bytes)``."""
        self._buf += chunk
        start = 0
        while (end := self._buf.find(b"\n", start)) != -1:
            yield self._line(bytes(self._buf[start:end]))
            start = end + 1
        del self._buf[:start]
        if len(self._buf) > self.max_line_bytes:
            raise BadLineError(self.line_no + 1, f"line longer than {self.max_line_bytes} bytes")

    def finish(self) -> Iterator[tuple[int, bytes]]:
        """The last line, if the file does not end with a newline."""
        if self._buf:
            yield self._line(bytes(self._buf))
            self._buf.clear()

    def _line(self, raw: bytes) -> tuple[int, bytes]:
        self.line_no += 1
        if len(raw) > self.max_line_bytes:
            raise BadLineError(self.line_no, f"line longer than {self.max_line_bytes} bytes")
        return self.line_no, raw[:-1] if raw.endswith(b"\r") else raw
