"""Reference apps that wire distkit's primitives into real flows (``make demo`` runs them all)."""
