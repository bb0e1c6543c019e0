"""``trace_id`` / ``span_id`` on every log record, so a log line can be found from a trace and back.

>>> import logging
>>> record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello", None, None)
>>> TraceIdFilter().filter(record), record.trace_id
(True, '00000000000000000000000000000000')
"""

from __future__ import annotations

import logging

from opentelemetry import trace

_NO_TRACE = "0" * 32
_NO_SPAN = "0" * 16


class TraceIdFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (lowercase hex, zeros outside a span) to every record it sees; use
    ``%(trace_id)s`` in a format string. Attach it to a handler so every logger's records get it."""

    def filter(self, record: logging.LogRecord) -> bool:
        sc = trace.get_current_span().get_span_context()
        if sc.is_valid:
            record.trace_id = format(sc.trace_id, "032x")
            record.span_id = format(sc.span_id, "016x")
        else:
            record.trace_id = _NO_TRACE
            record.span_id = _NO_SPAN
        return True
