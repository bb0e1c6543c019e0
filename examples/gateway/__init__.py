"""The gateway reference app (issue #22): see examples/gateway/README.md."""

from examples.gateway.app import main

__all__ = ["main"]
