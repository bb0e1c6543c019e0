"""distkit.saga (see docs/saga.md)."""
