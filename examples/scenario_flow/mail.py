"""How the systems reach the user: a :class:`Mailer` protocol with an in-memory and an SMTP implementation.

The demo records (and prints) mails; the tests run the SMTP one against a real local server, so "one mail"
is counted where the user would see it, not inside the app.
"""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Callable
from email.message import EmailMessage
from typing import Protocol


class Mailer(Protocol):
    """Anything that can send one mail; the flow guarantees it is asked once per notification."""

    def send(self, to: str, subject: str, body: str) -> None: ...


class RecordingMailer:
    """Keeps every mail (``sent``) and hands a one-line note to ``echo`` (the story's narrative)."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.sent: list[tuple[str, str]] = []
        self._echo = echo
        self._lock = threading.Lock()

    def send(self, to: str, subject: str, body: str) -> None:
        with self._lock:
            self.sent.append((to, subject))
        if self._echo is not None:
            self._echo(f"mail to {to}: {subject}")


class SmtpMailer:
    """Sends through an SMTP server with :mod:`smtplib`, one connection per mail (mails are rare here)."""

    def __init__(self, host: str, port: int, *, sender: str = "noreply@scenario.example",
                 timeout_s: float = 5.0) -> None:
        self.host, self.port, self.sender, self.timeout_s = host, port, sender, timeout_s

    def __repr__(self) -> str:
        return f"SmtpMailer({self.host}:{self.port})"

    def send(self, to: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, to, subject
        msg.set_content(body)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            smtp.send_message(msg)
