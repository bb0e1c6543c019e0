"""Reference app: a request travels UI -> MD -> a batch system; results come back over Kafka (see README.md)."""

from examples.scenario_flow.app import main

__all__ = ["main"]
