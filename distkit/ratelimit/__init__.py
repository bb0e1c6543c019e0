"""distkit.ratelimit (see docs/ratelimit.md)."""
