"""Flash sale: 1000 buyers, 100 units, three oversell-proof stock strategies behind a QPS limit and a bulkhead."""

from examples.flash_sale.app import main

__all__ = ["main"]
