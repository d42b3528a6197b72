"""SQLite outbox source (the embedded default): a lock file elects the relay, writes serialize."""

from __future__ import annotations

import fcntl
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from config import SourceSettings
from outbox.ddl import OutboxTypes, create_table
from outbox.errors import SourceConfigError
from outbox.source import SqlOutboxSource


class SqliteOutboxSource(SqlOutboxSource):
    """SQLite has no row locks: a claim is an ``IMMEDIATE`` transaction, which holds the write lock.

    Leadership is an exclusive ``flock`` on ``<database>.relay.lock``, which the
    kernel releases when the relay process dies.
    """

    supports_skip_locked = False

    def __init__(self, name: str, settings: SourceSettings, *, engine: sa.Engine | None = None):
        super().__init__(name, settings, engine=engine)
        sa.event.listen(self.engine, "connect", _text_or_bytes_factory)
        self.engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        database = sa.make_url(settings.url).database
        if not database or database == ":memory:":
            raise SourceConfigError(f"source {name!r}: a SQLite source needs a database file")
        self._lock_path = f"{database}.relay.lock"
        self._lock_file: IO[str] | None = None

    def _acquire_leader_lock(self, conn: sa.Connection) -> bool:
        handle = open(self._lock_path, "a")  # noqa: SIM115 - held for the leadership's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    def _release_leader_lock(self, conn: sa.Connection) -> None:
        self._drop_lock_file()

    def _on_lose_lead(self) -> None:
        self._drop_lock_file()

    def _drop_lock_file(self) -> None:
        handle, self._lock_file = self._lock_file, None
        if handle is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    def claim(self, limit: int) -> list[tuple[Any, ...]]:
        """The rows, read in an ``IMMEDIATE`` transaction that ends at once: held until the
        acknowledgement, its write lock (the whole database's) kept the service from writing
        while the batch was appended to the log, and kept an event log in the same file from
        being appended to at all ("database is locked", for ever). Nothing else claims: the
        lock file makes this relay the only one, and the acknowledgement deletes or marks
        the rows by position in a transaction of its own."""
        conn = self._leader()
        if conn.in_transaction():
            conn.rollback()
        rows = super().claim(limit)
        self.release()
        return rows

    def _now(self) -> sa.ColumnElement[Any]:
        return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now")

    def _a_date(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool] | None:
        """A number (read as an epoch), or text of the form ``YYYY-...`` from the year 1 on
        that SQLite reads as a date: not ``''``, ``'now'``, ``'0000-00-00 00:00:00'`` nor
        other text the relay parks."""
        text = sa.and_(
            column.op("GLOB")(sa.literal_column("'[0-9][0-9][0-9][0-9]-*'")),
            column >= sa.literal_column("'0001'"),
            sa.func.julianday(column).is_not(None),
        )
        return sa.or_(sa.func.typeof(column) != sa.literal_column("'text'"), text)

    def purge_dispatched(self) -> int:
        if self.settings.on_dispatch != "mark":
            return 0
        table = self._resolve()
        marked = table.c[self._columns["dispatched_at"]]
        seconds = self.settings.retention.total_seconds()
        cutoff = sa.func.strftime("%Y-%m-%d %H:%M:%f", "now", f"-{seconds:.3f} seconds")
        try:
            with self.engine.begin() as conn:
                return conn.execute(sa.delete(table).where(marked < cutoff)).rowcount
        except SQLAlchemyError:
            return 0

    def ddl(self) -> list[str]:
        return sqlite_ddl(self.settings)


def _text_or_bytes_factory(dbapi_connection: Any, _record: Any) -> None:
    """TEXT that is not valid UTF-8 arrives as bytes, so that its row is parked, not stuck."""
    dbapi_connection.text_factory = _text_or_bytes


def _text_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


_TYPES = OutboxTypes(
    quote='"',
    position="INTEGER PRIMARY KEY AUTOINCREMENT",
    event_id="TEXT NOT NULL UNIQUE DEFAULT (lower(hex(randomblob(16))))",
    text="TEXT NOT NULL",
    payload="TEXT NOT NULL",
    occurred_at="TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))",
    optional_text="TEXT",
    headers="TEXT",
    dispatched_at="TEXT",
)


def sqlite_ddl(settings: SourceSettings) -> list[str]:
    """SQLite has no schemas: the table is created in the database file of the DSN."""
    c, q = settings.columns, _TYPES.q
    settings = settings.model_copy(update={"schema_name": None})
    statements = [create_table(settings, _TYPES, [], "")]
    if c.dispatched_at:
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {q(settings.table + '_pending_idx')} "
            f"ON {q(settings.table)} ({q(c.dispatched_at)}, {q(c.position)})"
        )
    return statements
