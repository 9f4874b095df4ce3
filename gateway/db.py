"""Database engine, sessions and schema migrations (Alembic, run programmatically at start).
SQLite is the embedded default; PostgreSQL is used at scale. Both get the same code.
Read-only work can run on a plain connection (`read_async`), which on SQLite takes no lock."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Arbitrary constant: all gateways agree on it so only one migrates at a time.
MIGRATION_LOCK_ID = 0x6C697073
# Execution option marking a connection whose transactions only read.
READ_ONLY_OPTION = "lipsyncd_read_only"
DEFAULT_DB_THREADS = 5  # pools without a fixed size (in-memory SQLite)

T = TypeVar("T")


def create_db_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=10
        )
        _use_immediate_transactions(engine)
        return engine
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


def _use_immediate_transactions(engine: Engine) -> None:
    """SQLite: take the write lock when a transaction begins (BEGIN IMMEDIATE), so two
    writers wait for each other (busy timeout) instead of one failing on lock upgrade.
    Read-only connections emit no BEGIN at all: each statement then reads its own committed
    snapshot (WAL) and takes no lock."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if not connection.get_execution_options().get(READ_ONLY_OPTION, False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def run_migrations(engine: Engine) -> None:
    """`alembic upgrade head` on this engine; on PostgreSQL under an advisory lock."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect() as connection:
        is_postgres = connection.dialect.name == "postgresql"
        if is_postgres:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if is_postgres:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
                )
                connection.commit()


class Database:
    """The engine plus a way to run one unit of work in a transaction, off the event loop.
    Async work runs on the database's own threads, as many as the pool has connections (a
    plain executor hop costs about half of anyio's, which matters for polling)."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_db_engine(database_url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._executor = self._new_executor()

    def _new_executor(self) -> ThreadPoolExecutor:
        pool = self.engine.pool
        size = pool.size() if isinstance(pool, QueuePool) else DEFAULT_DB_THREADS
        capacity = size + getattr(pool, "_max_overflow", 0)
        return ThreadPoolExecutor(max_workers=max(1, capacity), thread_name_prefix="db")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def run(self, work: Callable[[Session], T]) -> T:
        with self.session() as session:
            return work(session)

    async def run_async(self, work: Callable[[Session], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run, work)

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run `work` (Core statements that only read). Each statement is consistent on its
        own; on SQLite several statements are not one snapshot (PostgreSQL: one transaction)."""
        with self.engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as connection:
            return work(connection)

    async def read_async(self, work: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.read, work)

    def migrate(self) -> None:
        run_migrations(self.engine)

    def dispose(self) -> None:
        """Close the connections; the database stays usable (both come back on demand)."""
        self._executor.shutdown(wait=False)
        self._executor = self._new_executor()
        self.engine.dispose()
