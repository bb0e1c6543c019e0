"""order_flow: the WeChat-style order. A Kafka transaction carries the "order placed" event while a saga debits
the balance and deducts the stock (two local SQL transactions); the event is committed only if both did, and a
failed order is compensated and its event aborted. Run it: ``python -m examples order_flow``."""

from examples.order_flow.app import main

__all__ = ["main"]
