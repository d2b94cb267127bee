"""Inserting plain tuples in bulk, the fastest way each back end offers.

Apart from ``rows`` (which indexes records) so that every module writing in bulk
(``rows``, ``textsearch``, ``received``, ``watch``) imports it without a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.exc import DBAPIError

from exchange.errors import InternalError


def insert_many(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert plain tuples in bulk: the bulk paths' rows skip SQLAlchemy's per-row work.

    SQLite: one executemany. PostgreSQL: COPY, which streams every row in one statement
    (executemany costs a protocol round of Python work per row, several times the rest).
    """
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        driver = conn.connection.driver_connection
        if driver is None:  # only once a connection is invalidated, never inside its transaction
            raise InternalError("bulk insert on an invalidated connection")
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            with driver.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        except dbapi_error as error:  # as SQLAlchemy would raise it (IntegrityError, DataError...)
            raise DBAPIError.instance(statement, None, error, dbapi_error, dialect=conn.dialect) from error
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})",
        list(rows),
    )
