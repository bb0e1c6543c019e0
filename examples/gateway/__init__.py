"""The gateway reference app (issue #22): see the gateway section of examples/README.md."""

from examples.gateway.app import main

__all__ = ["main"]
