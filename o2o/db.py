"""Database plumbing: the declarative Base, the engines, one session per request committed at the
edge, session_scope() for tasks and the CLI, and tasks queued to run only after commit.

Two engines share the settings: the sync one behind DbSession (endpoints that run in the thread
pool) and an async one (psycopg's async mode) behind SessionRunner, which async endpoints use to
run the same sync service code in the event loop (SQLAlchemy's greenlet bridge): no thread hand-off
for the session, the endpoint or the response. The hottest requests, the nearby list, search, the
next-job claim and a courier's position report, run on neither: DriverConnection gives them a
connection of psycopg's own async pool in autocommit, with no session around it (the claim opens
a transaction on it). Placing an order borrows one of those connections for a statement at a
time before its work (DriverLender: its patient, its Idempotency-Key), then works on a session."""

import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import (
    BindParameter,
    DateTime,
    MetaData,
    Table,
    bindparam,
    create_engine,
    event,
    exc,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Session,
    SessionTransaction,
    make_transient_to_detached,
    sessionmaker,
)
from sqlalchemy.util import await_only

from o2o.config import Settings, get_settings

# The largest value of an `integer` column: the ids of stores, products, users, keys, endpoints.
INT4_MAX = 2**31 - 1

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


def _check_alive(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # Liveness without a round trip: psycopg knows a connection it saw fail or close. One the
    # server dropped silently fails on first use; SQLAlchemy then sees a disconnect, invalidates
    # the pool's older connections, and the request answers 503 (the client retries).
    conn = record.driver_connection
    if conn is None or conn.closed or conn.broken:
        raise exc.DisconnectionError("connection closed")


@functools.cache
def get_engine() -> Engine:
    """Return the process-wide engine (created on first use, so imports stay cheap)."""
    settings = get_settings()
    engine = create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=10,
        # Connections older than this are replaced on checkout (server-side idle limits).
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )
    event.listen(engine, "checkout", _check_alive)
    return engine


# A connection whose prepared statements PostgreSQL plans once, for any values (see
# DRIVER_CONNECTION on why the hot statements' plans do not hang on their values). A statement
# psycopg has not prepared yet (its first runs on a connection) is planned at each run.
GENERIC_PLANS = "-c plan_cache_mode=force_generic_plan"


def make_async_engine(
    settings: Settings, *, pool_size: int | None = None, max_overflow: int = 0
) -> AsyncEngine:
    """An async engine for one serving of the application, made and disposed by its lifespan in
    its event loop (its pool waits on that loop): by default a fixed pool of `db_async_pool_size`
    connections, no overflow. Each request of the serving opens its sessions from the lifespan's
    state (`async_sessions`: request.state.async_sessions, or .writer_sessions). Its connections
    use generic plans, as the driver pool's do (`DRIVER_CONNECTION`): a statement of placing an
    order or of the async reads that psycopg has prepared is planned once for its connection
    (by default PostgreSQL may plan some of them again at every run, for the run's values)."""
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.db_async_pool_size if pool_size is None else pool_size,
        max_overflow=max_overflow,
        pool_timeout=10,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "options": GENERIC_PLANS},
    )
    event.listen(engine.sync_engine, "checkout", _check_alive)
    return engine


def async_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind=engine, expire_on_commit=False)


class Runner:
    """Run sync session code (the services) for an async endpoint, in the event loop. The session
    is made on first use: an endpoint that needs it only on some paths pays nothing on the others.
    """

    def __init__(self, sessions: Callable[[], AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            self._session = self._sessions()
        return self._session

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call fn(session, *args, **kwargs) with a sync Session over the async connection."""
        return await self.session.run_sync(fn, *args, **kwargs)


async def get_runner(request: Request) -> AsyncIterator[Runner]:
    """Give an async request one session of its application's async engine; commit before the
    response, roll back on any error."""
    async with _session_of_request(request.state.async_sessions) as runner:
        yield runner


async def get_writer_runner(request: Request) -> AsyncIterator[Runner]:
    """As get_runner, on the writers' engine: writes that may wait on row locks while holding
    their connection (placing an order) take their connections from a fixed pool of their own
    (`db_pool_size`), so a flash sale cannot leave the hot reads and claims without one."""
    async with _session_of_request(request.state.writer_sessions) as runner:
        yield runner


@asynccontextmanager
async def _session_of_request(sessions: Callable[[], AsyncSession]) -> AsyncIterator[Runner]:
    runner = Runner(sessions)
    try:
        yield runner
        if runner._session is not None:
            await runner._session.commit()
    except BaseException:
        if runner._session is not None:
            await runner._session.rollback()
        raise
    finally:
        if runner._session is not None:
            await runner._session.close()


# How the driver pool's connections run (the load test's reference runs the same way):
# - autocommit: a read's statements each see what was committed when they started (as in a READ
#   COMMITTED transaction), without the two round trips of BEGIN and COMMIT; work that needs a
#   transaction opens one (`conn.transaction()`): the next-job claim, whose courier's row stays
#   locked until its claim commits;
# - generic plans: psycopg prepares a statement after a few runs on a connection, and PostgreSQL
#   then plans it once for the connection instead of once per run. The hot reads' plans do not
#   hang on their values: search picks its plan in Python from the cart's selectivity and writes
#   its LIMITs into the text (`stores.search`), and the nearby walk is one index scan. The claim's
#   are keyed lookups (the courier's row, their active jobs) and a pick over the stores in reach
#   and each one's open jobs in index order, whatever the values (`make load`'s courier rush);
# - a lock timeout: no statement on the pool waits on a lock longer than DRIVER_LOCK_TIMEOUT (it
#   fails with LockNotAvailable: the key's claim answers 409 `request_in_flight`, anything else
#   503), so a lock held long elsewhere cannot park the connections the hot reads share.
#
# The claim and the position report share the hot reads' pool: they wait on no lock but their own
# courier's row, held by another claim or report of the same courier, or by a courier's action on
# a session (a claim by id, a trip, a shift's end), each a transaction of a few statements; the
# jobs a next-job claim would wait on are skipped (SKIP LOCKED). Placing an order, which may
# queue behind a lot's lock, has a pool of its own (`WriterRunner`); before its work it borrows
# a driver connection for its patient (a read) and for its Idempotency-Key's claim, which waits
# only on its key's row while a twin request holding the key commits its answer.
DRIVER_LOCK_TIMEOUT = "1s"
DRIVER_CONNECTION = {
    "autocommit": True,
    "options": f"{GENERIC_PLANS} -c lock_timeout={DRIVER_LOCK_TIMEOUT}",
}


def make_driver_pool(settings: Settings) -> AsyncConnectionPool:
    """A psycopg async pool for one serving of the application, opened by its lifespan in its
    event loop: as many connections as the async engine's pool (`db_async_pool_size`), no liveness
    round trip on checkout (a connection psycopg saw fail is dropped as it comes back; one the
    server dropped silently fails its request with 503, and the client retries). Its
    connections run as DRIVER_CONNECTION says."""
    return AsyncConnectionPool(
        psycopg_url(settings.database_url),
        min_size=1,
        max_size=settings.db_async_pool_size,
        open=False,
        timeout=10,
        max_lifetime=1800,
        kwargs={"connect_timeout": 5, **DRIVER_CONNECTION},
    )


def psycopg_url(url: str) -> str:
    """The settings' SQLAlchemy URL as libpq reads it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


async def get_driver(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """Give an async endpoint a connection of its application's driver pool (autocommit,
    generic plans: see DRIVER_CONNECTION), back to the pool after the response is built."""
    async with request.state.driver_pool.connection() as conn:
        yield conn


# Lends a connection of the driver pool for a few statements, taken back as its block ends.
LendDriver = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection]]


async def get_driver_lender(request: Request) -> LendDriver:
    """Give an endpoint that works on a session a way to borrow a driver connection for a few
    statements before its work (a placement's user and Idempotency-Key), back to the pool as the
    block ends: the request then waits for the writers' pool, and on a lot's lock, holding none
    of the connections the hot reads and the claims share."""
    return request.state.driver_pool.connection


@functools.cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def get_session() -> Iterator[Session]:
    """Give a request one session; commit once at the end, or roll back on any error."""
    session = get_sessionmaker()()
    session.info[COMMIT_ON_RETURN] = True
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# Marks a request's session, which its endpoint commits as it returns (see commit_on_return).
COMMIT_ON_RETURN = "commit_on_return"

# scope="function": the commit runs when the endpoint returns, before the response is sent, so a
# failed commit becomes an error response instead of a 2xx for work that was never saved.
DbSession = Annotated[Session, Depends(get_session, scope="function")]
SessionRunner = Annotated[Runner, Depends(get_runner, scope="function")]
WriterRunner = Annotated[Runner, Depends(get_writer_runner, scope="function")]
DriverConnection = Annotated[psycopg.AsyncConnection, Depends(get_driver, scope="function")]
DriverLender = Annotated[LendDriver, Depends(get_driver_lender)]


def commit_on_return(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a sync endpoint so it commits its request session in its own thread as it returns."""

    # FastAPI validates a sync endpoint's return value in a second worker thread, and only then
    # closes the session dependency. Under a burst on one row (the last units of a lot) every
    # worker thread can be waiting for the lock that a finished request still holds while that
    # request waits for a thread to validate its response: nothing moves until the pool times
    # out. Committing as the endpoint returns releases the locks before the second hop. The
    # dependency's own commit then finds nothing to do, and still rolls back on any error.
    if getattr(endpoint, COMMIT_ON_RETURN, False):
        return endpoint  # wrapped already: a router included in another builds its routes again

    @functools.wraps(endpoint)
    def run_then_commit(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        for value in kwargs.values():
            if isinstance(value, Session) and value.info.get(COMMIT_ON_RETURN):
                value.commit()
        return result

    setattr(run_then_commit, COMMIT_ON_RETURN, True)
    return run_then_commit


def commit_after(session: Session, statement: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `statement` (psycopg's `%s` placeholders) once for each of `rows`, then commit the
    session's transaction, sending them and the COMMIT in one round trip (psycopg's pipeline).

    For the last statements of a transaction whose row locks others queue for: the locks are
    held for the server's time only, not for a round trip back to the application and the wait
    for its event loop or interpreter to send the COMMIT (under load, most of the hold). A
    statement that fails (it raises, as a check that must hold before the commit does) leaves
    the COMMIT nothing to commit: its error is raised as psycopg's, and the caller rolls back.

    A session that does not own its transaction runs the statements, then commits, in turn:
    one bound to a connection (its caller's transaction, as the tests' are, whose commits are
    savepoints' releases), or one inside a savepoint of its own (its commit would release it
    after the COMMIT had ended it). The session's commit afterwards sends nothing; a
    `before_commit` listener that wrote would write in a transaction of its own."""
    session.flush()
    conn = session.connection()
    if isinstance(session.get_bind(), Connection) or conn.in_nested_transaction():
        try:
            for row in rows:
                conn.exec_driver_sql(statement, tuple(row))
        except exc.DBAPIError as error:
            raise error.orig from None  # as the pipeline raises it
        session.commit()
        return
    # Sent past SQLAlchemy's execution: whatever watches the engine's statements (a test's
    # count, tracing) is told of them as if they had gone through it.
    for row in rows:
        conn.dispatch.before_cursor_execute(conn, None, statement, tuple(row), None, False)
    driver = conn.connection.driver_connection
    if isinstance(driver, psycopg.AsyncConnection):
        await_only(_pipelined_async(driver, statement, rows))
    else:
        with driver.pipeline():
            for row in rows:
                driver.execute(statement, tuple(row))
            driver.commit()
    # The session's own commit: its events and bookkeeping; the driver has nothing left to send.
    session.commit()


async def _pipelined_async(
    driver: psycopg.AsyncConnection, statement: str, rows: Sequence[Sequence[Any]]
) -> None:
    async with driver.pipeline():
        for row in rows:
            await driver.execute(statement, tuple(row))
        await driver.commit()


@contextmanager
def session_scope() -> Iterator[Session]:
    """Run a unit of work outside a request (tasks, CLI): commit on success, roll back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# Work (mostly Celery sends) that must happen only once the transaction is durable. A task sent
# before commit could run before its rows are visible, or for rows that are then rolled back.
_AFTER_COMMIT = "o2o_after_commit"


def run_after_commit(session: Session, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Queue fn(*args, **kwargs) to run after the session commits; drop it on rollback."""
    session.info.setdefault(_AFTER_COMMIT, []).append(functools.partial(fn, *args, **kwargs))


def enqueue(session: Session, task: Any, *args: Any, **kwargs: Any) -> None:
    """Send a Celery task after the session commits."""
    run_after_commit(session, task.apply_async, args=args, kwargs=kwargs)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    pending = session.info.pop(_AFTER_COMMIT, [])
    for fn in pending:
        try:
            fn()
        except Exception:  # the change is committed; the outbox/periodic sweeps catch up
            log.exception("after-commit hook failed")


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


# ---------------------------------------------------------------------------------------------
# Rows written by one statement
#
# The unit of work writes a new aggregate a table at a time, each INSERT with the ORM's work per
# object and per statement around it; a hot write (placing an order) instead writes its rows in
# one statement of data-modifying CTEs and hands the session the objects as if it had loaded them.
# The INSERTs are built from the tables, so a column added to one is written too; an object that
# leaves unset a column the table would fill in itself is refused (the INSERT names every column,
# so the table's default would not apply).

_ATTACHED = "o2o_attached"


def insert_values(
    table: Table, prefix: str, *, computed: Mapping[str, str] | None = None
) -> tuple[str, str, list[BindParameter]]:
    """The column list and the VALUES list of an INSERT of one row of `table`, and their typed bind
    parameters: every column, its value the parameter `prefix` + its name (typed as the column, so
    a point is sent as the ORM sends one), but those `computed` names, whose value is the SQL
    expression given (read by the statement itself). `written_values(obj, prefix, skip=...)`,
    skipping the computed columns, gives the values."""
    computed = computed or {}
    columns = list(table.columns)
    return (
        ", ".join(column.name for column in columns),
        ", ".join(computed.get(column.name, f":{prefix}{column.name}") for column in columns),
        [
            bindparam(prefix + column.name, type_=column.type)
            for column in columns
            if column.name not in computed
        ],
    )


def insert_arrays(table: Table, prefix: str, *, skip: tuple[str, ...]) -> tuple[str, str]:
    """The column list of an INSERT ... SELECT of many rows of `table`, and the arrays to unnest
    for it: one array parameter per column (`prefix` + its name), but those in `skip` (the
    caller's). `written_rows(table, objects, prefix, skip=...)` gives the arrays."""
    dialect = postgresql.dialect()
    columns = [column for column in table.columns if column.name not in skip]
    return (
        ", ".join(column.name for column in columns),
        ", ".join(
            f"CAST(:{prefix}{column.name} AS {column.type.compile(dialect=dialect)}[])"
            for column in columns
        ),
    )


def written_values(obj: Any, prefix: str = "", *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values an INSERT built here writes for a new object: each mapped column's, keyed
    `prefix` + its name. A column never set is set to None on the object, as it is written (the
    object then knows its whole row); one the table would fill in itself may not be left None."""
    state = sa_inspect(obj)
    values = {}
    for prop in state.mapper.column_attrs:
        if prop.key not in state.dict:
            setattr(obj, prop.key, None)
        for column in prop.columns:
            if column.name in skip:
                continue
            value = state.dict[prop.key]
            if value is None and (column.default is not None or column.server_default is not None):
                raise ValueError(f"{column.table.name}.{column.name} must be set: it has a default")
            values[prefix + column.name] = value
    return values


def written_rows(
    table: Table, objects: list[Any], prefix: str, *, skip: tuple[str, ...]
) -> dict[str, list[Any]]:
    """The arrays `insert_arrays(table, prefix, skip=skip)` unnests for these new objects, in
    their order."""
    rows = [written_values(obj, skip=skip) for obj in objects]
    return {
        prefix + column.name: [row[column.name] for row in rows]
        for column in table.columns
        if column.name not in skip
    }


def attach_written(session: Session, *objects: Any) -> None:
    """Make new objects whose rows a statement has just written persistent in `session`, as if
    loaded: no INSERT at the next flush, and a later change is written as an UPDATE. Each must
    have its identity and every column set (`written_values` sets them), and the objects it
    cascades to must be among `objects`. If the transaction they were written in is rolled back,
    they leave the session, as new objects the unit of work wrote do."""
    for obj in objects:
        state = sa_inspect(obj)
        unset = set(state.mapper.column_attrs.keys()) - state.dict.keys()
        if unset:
            raise ValueError(f"{type(obj).__name__} attached without {sorted(unset)}")
        make_transient_to_detached(obj)
    session.add_all(objects)
    written_in = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_ATTACHED, []).append((written_in, objects))


@event.listens_for(Session, "after_soft_rollback")
def _expunge_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    attached = session.info.get(_ATTACHED)
    if not attached:
        return
    kept = []
    for written_in, objects in attached:
        if _within(written_in, previous_transaction):
            for obj in objects:
                if obj in session:
                    session.expunge(obj)
        else:
            kept.append((written_in, objects))
    session.info[_ATTACHED] = kept


@event.listens_for(Session, "after_commit")
def _forget_attached(session: Session) -> None:
    session.info.pop(_ATTACHED, None)


def _within(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False
