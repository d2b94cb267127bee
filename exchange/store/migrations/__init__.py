"""Alembic migrations of the node's schema (``exchange db upgrade`` applies them)."""
