"""A node's tables in a PostgreSQL schema of their own: making one, the URL that selects it,
dropping it. Used where several nodes share one database (the demo, benchmarks, tests)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool


def schema_url(url: str, schema: str) -> str:
    """``url`` with ``schema`` first on the connection's search_path (where the tables live)."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={schema}')}"


def create_schema(url: str, schema: str) -> str:
    """Make ``schema`` in the database of ``url`` (if missing); returns the URL selecting it."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)}"))
    finally:
        engine.dispose()
    return schema_url(url, schema)


def drop_schemas(url: str, schemas: Iterable[str]) -> None:
    """Drop each schema with its tables, one transaction each (a lock per table)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        for schema in schemas:
            with engine.begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {_quoted(schema)} CASCADE"))
    finally:
        engine.dispose()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
