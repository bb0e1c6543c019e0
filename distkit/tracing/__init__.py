"""distkit.tracing (see docs/tracing.md)."""
