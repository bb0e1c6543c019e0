"""distkit.locks (see docs/locks.md)."""
