"""One trace across HTTP → service → Kafka → consumer, and request context that follows threads, tasks and
messages (see docs/tracing.md). Built on OpenTelemetry's API and maintained propagators; a no-op (and cheap)
when no SDK is configured.

>>> from distkit.tracing import request_context, current_request_context, inject_headers
>>> with request_context(shard="db_3"):
...     inject_headers({})["baggage"]
'shard=db_3'
"""

from distkit.tracing.context import ContextExecutor, current_request_context, request_context
from distkit.tracing.kafka import TracedProducer, traced_handler, traced_producer
from distkit.tracing.propagation import b3_propagator, extract_context, inject_headers, use_b3, use_w3c

__all__ = [
    "ContextExecutor",
    "TracedProducer",
    "b3_propagator",
    "current_request_context",
    "extract_context",
    "inject_headers",
    "request_context",
    "traced_handler",
    "traced_producer",
    "use_b3",
    "use_w3c",
]
