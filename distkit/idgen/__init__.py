"""distkit.idgen (see docs/idgen.md)."""
