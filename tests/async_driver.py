"""The nearby list's driver connection (`o2o.db.DriverConnection`: psycopg's async connection)
for a test whose requests run on a sync session: the same connection's sync side, under the
async API that read uses, so it sees the test's data in its transaction. A savepoint stands for
the request's transaction: the driver's rollback returns to it."""

from typing import Any

from sqlalchemy.orm import Session


class SyncDriver:
    def __init__(self, session: Session) -> None:
        self.raw = session.connection().connection.driver_connection
        self.raw.execute("SAVEPOINT hot_read")

    def cursor(self, **kwargs: Any) -> "_Cursor":
        return _Cursor(self.raw.cursor(**kwargs))

    async def rollback(self) -> None:
        self.raw.execute("ROLLBACK TO SAVEPOINT hot_read")


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
