"""distkit.messaging (see docs/messaging.md)."""
