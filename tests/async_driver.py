"""The hot reads' driver connection (`o2o.db.DriverConnection`: psycopg's async connection)
for a test whose requests run on a sync session: the same connection's sync side, under the
async API those reads use, so it sees the test's data in its transaction. A savepoint stands for
the state before the request: the driver's rollback returns to it, and a transaction the read
opens is a savepoint of its own."""

from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.orm import Session


class SyncDriver:
    def __init__(self, session: Session) -> None:
        self.raw = session.connection().connection.driver_connection
        self.raw.execute("SAVEPOINT hot_read")
        self.info = self.raw.info

    def cursor(self, **kwargs: Any) -> "_Cursor":
        return _Cursor(self.raw.cursor(**kwargs))

    async def rollback(self) -> None:
        self.raw.execute("ROLLBACK TO SAVEPOINT hot_read")

    @asynccontextmanager
    async def transaction(self):
        # A savepoint stands for the read's own transaction; what it SET LOCAL is undone as the
        # real transaction's end would undo it.
        self.raw.execute("SAVEPOINT hot_read_step")
        try:
            yield
        finally:
            self.raw.execute("ROLLBACK TO SAVEPOINT hot_read_step")
            self.raw.execute("RELEASE SAVEPOINT hot_read_step")


class _Cursor:
    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    async def __aenter__(self) -> "_Cursor":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cursor.close()

    async def execute(self, query: str, params: dict | None = None) -> None:
        self.cursor.execute(query, params)

    async def fetchall(self) -> list[Any]:
        return self.cursor.fetchall()
