"""Saga logs: SQL (PostgreSQL / SQLite) and in-memory."""
