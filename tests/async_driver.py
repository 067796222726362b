"""The driver connection (`o2o.db.DriverConnection`: psycopg's async connection) of the hot
reads and the next-job claim, and the one lent to a placement for its user and key
(`o2o.db.DriverLender`), for a test whose requests run on a sync session: the same
connection's sync side, under the async API they use, so it sees the test's data in its
transaction. A savepoint stands for the state before the request: the driver's rollback returns
to it, and a transaction the request opens is a savepoint of its own."""

from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.orm import Session

# What a transaction on the driver may SET LOCAL (`stores.proximity._INDEX_SCANS_OFF`).
_SETTINGS = "SELECT current_setting('enable_indexscan'), current_setting('plan_cache_mode')"
_RESTORE = (
    "SELECT set_config('enable_indexscan', %s, true), set_config('plan_cache_mode', %s, true)"
)


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
        # A savepoint stands for the caller's own transaction: released when it ends well (a
        # claim's writes stay, as the real commit keeps them), rolled back when it fails. What
        # the transaction SET LOCAL (a walk run again without index scans) is undone either way,
        # as the real transaction's end would undo it.
        settings = self.raw.execute(_SETTINGS).fetchone()
        self.raw.execute("SAVEPOINT hot_read_step")
        try:
            yield
        except BaseException:
            self.raw.execute("ROLLBACK TO SAVEPOINT hot_read_step")
            self.raw.execute("RELEASE SAVEPOINT hot_read_step")
            raise
        self.raw.execute("RELEASE SAVEPOINT hot_read_step")
        self.raw.execute(_RESTORE, settings)


class _Cursor:
    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    async def __aenter__(self) -> "_Cursor":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cursor.close()

    async def execute(self, query: str, params: dict | tuple | None = None) -> None:
        self.cursor.execute(query, params)

    async def fetchall(self) -> list[Any]:
        return self.cursor.fetchall()

    async def fetchone(self) -> Any:
        return self.cursor.fetchone()
