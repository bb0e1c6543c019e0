"""Kept for the suite's existing imports: the clock now ships with distkit (:mod:`distkit.testing.clock`)."""

from distkit.testing.clock import FakeClock

__all__ = ["FakeClock"]
