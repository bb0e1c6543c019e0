"""distkit.idempotency (see docs/idempotency.md)."""
