"""The durable event log: gap-free positions per source, ``event_id`` unique per source.

Appends for one source serialize on that source's row in ``rm_log_heads``, so
positions stay gap-free and commit in order even if two relays ever overlap. That row also
records the source's ``binary_ids`` rule (how binary id columns became its aggregate ids): an
append made under another rule is refused in the same transaction, so one source's
aggregates are never keyed two ways (:mod:`outbox.log_rules`).
Rows already in the log (a relay crashed after appending but before marking
the outbox) are recognised by ``event_id`` and skipped. A row whose ``event_id`` is in the
log for another event (another aggregate, type or payload: the outbox reused the id, as
position-derived ids do after its sequence restarts) is parked with that reason, not
skipped: it is a new event (:mod:`outbox.log_duplicates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from outbox.db import create_engine, describe_db_error, engine_kind
from outbox.envelope import Envelope
from outbox.errors import LogError
from outbox.log_duplicates import without_logged
from outbox.log_rules import check_rule, insert_head
from outbox.migrate import LOCK_RETRIES, LOCK_TIMEOUT, START_AGAIN, upgrade
from outbox.parking import not_parked_yet
from outbox.rows import LogRecord, MalformedRow
from outbox.schema import PARKED_OUTBOX_ROW, event_log, log_heads, parked

_COPY_COLUMNS = (
    "source",
    "position",
    "event_id",
    "tenant",
    "aggregate_type",
    "aggregate_id",
    "key_hash",
    "event_type",
    "payload",
    "headers",
    "occurred_at",
)
_EVENT_ID_KEY = "rm_event_log_event_id_key"
_RESERVE = (
    "UPDATE rm_log_heads SET head = head + %s, updated_at = current_timestamp, "
    "binary_ids = coalesce(binary_ids, %s) WHERE source = %s RETURNING head, binary_ids"
)
_INSERT_HEAD = (
    "INSERT INTO rm_log_heads (source, head, binary_ids) VALUES (%s, 0, %s) ON CONFLICT DO NOTHING"
)

SMALL_APPEND = 100
"""Batches up to this many records are appended by one statement sent with its BEGIN and
COMMIT (one round trip); larger ones by COPY."""
_APPEND_SMALL = (
    "WITH h AS (UPDATE rm_log_heads SET head = head + %s, updated_at = current_timestamp "
    "WHERE source = %s AND (binary_ids = %s OR %s::text IS NULL) RETURNING head), "
    "appended AS (INSERT INTO rm_event_log "
    "(source, position, event_id, tenant, aggregate_type, aggregate_id, key_hash, event_type, "
    "payload, headers, occurred_at) "
    "SELECT %s, h.head - %s + r.i, r.event_id, r.tenant, r.aggregate_type, r.aggregate_id, "
    "r.key_hash, r.event_type, r.payload, r.headers, r.occurred_at "
    "FROM h, json_to_recordset(%s::json) AS r(i bigint, event_id text, tenant text, "
    "aggregate_type text, aggregate_id text, key_hash integer, event_type text, payload jsonb, "
    "headers jsonb, occurred_at timestamptz)) "
    "SELECT head FROM h"
)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one append did; the new events occupy positions ``(after, head]``."""

    appended: int
    duplicates: int
    parked: int
    head: int
    type_hashes: frozenset[tuple[str, int]] = frozenset()
    """``(event_type, key_hash)`` of each appended event (duplicates and parked rows are not
    appended): which types reached which aggregates (:func:`outbox.envelope.aggregate_hash`)."""

    @property
    def after(self) -> int:
        return self.head - self.appended

    @property
    def key_hashes(self) -> frozenset[int]:
        """The aggregates of the appended events, whatever their types."""
        return frozenset(h for _, h in self.type_hashes)


def _type_hashes(records: Sequence[LogRecord]) -> frozenset[tuple[str, int]]:
    return frozenset((r.event_type, r.key_hash) for r in records)


class LogRejectedError(LogError):
    """The log refused a batch because of its data (not because it is unreachable)."""


class EventLog:
    """The event log stored in the read store (PostgreSQL, or SQLite for the embedded default)."""

    def __init__(self, url: str, *, engine: sa.Engine | None = None) -> None:
        self.kind = engine_kind(url)
        if self.kind == "mysql":
            raise LogError("the event log lives in PostgreSQL or SQLite, not MySQL")
        self.engine = engine or create_engine(url)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")

    def create_tables(
        self, *, lock_timeout: float = LOCK_TIMEOUT, lock_retries: int = LOCK_RETRIES
    ) -> None:
        """Migrate the read store to the latest revision (the log's and the stores' own tables,
        :mod:`outbox.migrate`); raises :class:`StoreError`. The CLI checks the revision instead.

        On PostgreSQL its table-lock waits are bounded as ``readmodel migrate``'s: behind a
        transaction left open it gives up after about a minute (5 s, 6 times, backoff
        between) with :class:`~outbox.migrate.MigrationBlocked` naming the table and the
        sessions holding it, rather than hang a starting process without a word (a
        supervisor restarts it)."""
        upgrade(
            self.engine, lock_timeout=lock_timeout, lock_retries=lock_retries, remedy=START_AGAIN
        )

    def close(self) -> None:
        self.engine.dispose()

    # -- writing -------------------------------------------------------------------

    def append(
        self,
        source: str,
        records: Sequence[LogRecord],
        malformed: Sequence[MalformedRow] = (),
        *,
        binary_ids: str | None = None,
    ) -> AppendResult:
        """Append ``records`` (in order) and park ``malformed`` rows, in one transaction.

        ``binary_ids``: the rule the records' ids were made by; recorded with the source's
        first events if the log has none; when it records another, nothing is written and
        :class:`~outbox.errors.BinaryIdsConflict` is raised (:mod:`outbox.log_rules`).
        ``None`` (a source without such a rule) neither checks nor records.

        Raises :class:`LogRejectedError` when the data itself is refused (the
        caller can then append row by row to find the culprit) and
        :class:`LogError` when the log cannot be reached.
        """
        try:
            return self._append(source, records, malformed, binary_ids)
        except (DataError, IntegrityError, psycopg.DataError, psycopg.IntegrityError) as exc:
            raise LogRejectedError(describe_db_error(exc)) from exc
        except (SQLAlchemyError, psycopg.Error) as exc:
            raise LogError(f"appending to the event log failed: {describe_db_error(exc)}") from exc

    def _append(
        self,
        source: str,
        records: Sequence[LogRecord],
        malformed: Sequence[MalformedRow],
        rule: str | None,
    ) -> AppendResult:
        if self.kind == "postgresql" and records:
            try:
                if len(records) <= SMALL_APPEND and not malformed:
                    appended = self._append_small(source, records, rule)
                    if appended is not None:
                        return appended
                return self._append_unchecked(source, records, malformed, rule)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != _EVENT_ID_KEY:
                    raise
        return self._append_checked(source, records, malformed, rule)

    def _append_unchecked(
        self,
        source: str,
        records: Sequence[LogRecord],
        malformed: Sequence[MalformedRow],
        rule: str | None,
    ) -> AppendResult:
        """The common case on PostgreSQL: no record is in the log yet, so don't look.

        Reserving the positions locks the source's head row, as in the checked path. A
        duplicate ``event_id`` makes the COPY fail on the log's unique key, which rolls
        the whole transaction back; :meth:`_append` then appends checked. This keeps
        appends independent of the log's size (the look-up by ``event_id`` is planned
        as a scan of all the source's rows while the log has no statistics yet).
        """
        with self._writer.begin() as conn:
            head = self._reserve(conn, source, len(records), rule)
            self._write(conn, source, head - len(records), records)
            newly_parked = self._park(conn, source, malformed)
        return AppendResult(len(records), 0, newly_parked, head, _type_hashes(records))

    def _append_small(
        self, source: str, records: Sequence[LogRecord], rule: str | None
    ) -> AppendResult | None:
        """:meth:`_append_unchecked` for a few records: reserve and insert in one statement,
        sent with BEGIN and COMMIT at once (psycopg's pipeline mode). ``None`` (nothing
        written) when the source has no head row yet, or its row records no rule or another
        than ``rule`` (the slower paths record it, or refuse)."""
        # One JSON document (encoded in C; payloads go in as they are, already checked JSON)
        # instead of nine arrays, which psycopg would adapt element by element in Python.
        document = orjson.dumps(
            [
                {
                    "i": i,
                    "event_id": r.event_id,
                    "tenant": r.tenant,
                    "aggregate_type": r.aggregate_type,
                    "aggregate_id": r.aggregate_id,
                    "key_hash": r.key_hash,
                    "event_type": r.event_type,
                    "payload": orjson.Fragment(r.payload),
                    "headers": None if r.headers is None else orjson.Fragment(r.headers),
                    "occurred_at": r.occurred_at,
                }
                for i, r in enumerate(records, start=1)
            ]
        ).decode()
        count = len(records)
        params = (count, source, rule, rule, source, count, document)
        with self._writer.begin() as conn:
            driver = conn.connection.driver_connection  # type: ignore[union-attr]
            with driver.pipeline():
                cursor = driver.cursor()
                cursor.execute(_APPEND_SMALL, params)
                driver.commit()
            row = cursor.fetchone()
        if row is None:
            return None
        return AppendResult(len(records), 0, 0, int(row[0]), _type_hashes(records))

    def _reserve(self, conn: sa.Connection, source: str, count: int, rule: str | None) -> int:
        """Lock the source's head row, move it ``count`` positions on (``count`` > 0), record
        ``rule`` if it has none; returns the new head. Raises ``BinaryIdsConflict`` (the caller's
        transaction then rolls back) when the row records another rule.

        PostgreSQL only, on the driver's connection like the COPY that follows: this
        runs once per relay step, and plain SQL saves most of the step's client CPU.
        """
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        row = cursor.execute(_RESERVE, (count, rule, source)).fetchone()
        if row is None:
            cursor.execute(_INSERT_HEAD, (source, rule))
            row = cursor.execute(_RESERVE, (count, rule, source)).fetchone()
        head, recorded = row  # type: ignore[misc]
        check_rule(source, rule, recorded)
        return int(head)

    def _append_checked(
        self,
        source: str,
        records: Sequence[LogRecord],
        malformed: Sequence[MalformedRow],
        rule: str | None,
    ) -> AppendResult:
        with self._writer.begin() as conn:
            head, recorded = self._lock_head(conn, source, rule)
            fresh, duplicates, reused = without_logged(conn, source, records)
            malformed = [*malformed, *reused]
            if fresh:
                self._write(conn, source, head, fresh)
                head += len(fresh)
                values = {"head": head, "updated_at": sa.func.current_timestamp()}
                if recorded is None and rule is not None:
                    values["binary_ids"] = rule  # the first events: the rule that keyed them
                conn.execute(log_heads.update().where(log_heads.c.source == source).values(values))
            newly_parked = self._park(conn, source, malformed)
        return AppendResult(len(fresh), duplicates, newly_parked, head, _type_hashes(fresh))

    def _park(self, conn: sa.Connection, source: str, malformed: Sequence[MalformedRow]) -> int:
        """Park ``malformed`` rows not parked already; returns how many were parked now.

        A row delivered again (the relay crashed, or its acknowledgement failed, after the
        append; a paused leader's batch after a takeover) is not parked a second time: an
        entry still parked for the source with the same ids and raw row stands for it. Each
        entry stands for one row, so two identical rows are two entries."""
        malformed = not_parked_yet(conn, source, malformed)
        if not malformed:
            return 0
        conn.execute(
            parked.insert(),
            [
                {
                    "kind": PARKED_OUTBOX_ROW,
                    "source": source,
                    "event_id": row.event_id,
                    "aggregate_type": row.aggregate_type,
                    "aggregate_id": row.aggregate_id,
                    "reason": row.reason,
                    "raw": row.raw,
                }
                for row in malformed
            ],
        )
        return len(malformed)

    def _lock_head(
        self, conn: sa.Connection, source: str, rule: str | None
    ) -> tuple[int, str | None]:
        """Lock the source's head row (made if missing) and check ``rule`` against the one it
        records; returns the head and that rule."""
        query = (
            sa.select(log_heads.c.head, log_heads.c.binary_ids)
            .where(log_heads.c.source == source)
            .with_for_update()
        )
        row = conn.execute(query).first()
        if row is None:
            conn.execute(insert_head(self.kind, source))
            row = conn.execute(query).one()
        head, recorded = row
        check_rule(source, rule, recorded)
        return int(head), recorded

    def _write(
        self, conn: sa.Connection, source: str, head: int, records: Sequence[LogRecord]
    ) -> None:
        rows = [
            (
                source,
                head + offset,
                r.event_id,
                r.tenant,
                r.aggregate_type,
                r.aggregate_id,
                r.key_hash,
                r.event_type,
                r.payload,
                r.headers,
                r.occurred_at,
            )
            for offset, r in enumerate(records, start=1)
        ]
        if self.kind == "postgresql":
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            statement = f"COPY rm_event_log ({', '.join(_COPY_COLUMNS)}) FROM STDIN"
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            placeholders = ", ".join("?" for _ in _COPY_COLUMNS)
            conn.exec_driver_sql(
                f"INSERT INTO rm_event_log ({', '.join(_COPY_COLUMNS)}) VALUES ({placeholders})",
                [_sqlite_row(row) for row in rows],
            )

    # -- reading -------------------------------------------------------------------

    def head(self, source: str) -> int:
        """The position of the last event of ``source`` in the log (0 when none)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(log_heads.c.head).where(log_heads.c.source == source)
            ).scalar()
        return int(value or 0)

    def heads(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                s: int(h) for s, h in conn.execute(sa.select(log_heads.c.source, log_heads.c.head))
            }

    def read(
        self, source: str, after: int = 0, upto: int | None = None, limit: int = 10_000
    ) -> list[Envelope]:
        """Events of ``source`` with ``after < position <= upto``, in log order."""
        query = (
            sa.select(event_log)
            .where(event_log.c.source == source, event_log.c.position > after)
            .order_by(event_log.c.position)
            .limit(limit)
        )
        if upto is not None:
            query = query.where(event_log.c.position <= upto)
        with self.engine.connect() as conn:
            return [envelope_from_row(row._mapping) for row in conn.execute(query)]

    def tenants_at(self, source: str, positions: Sequence[int]) -> dict[int, str | None]:
        """The tenant of each event of ``source`` at ``positions`` (``None`` for none); a
        position not in the log is left out."""
        query = sa.select(event_log.c.position, event_log.c.tenant).where(
            event_log.c.source == source, event_log.c.position.in_(sorted(set(positions)))
        )
        with self.engine.connect() as conn:
            return {int(position): tenant for position, tenant in conn.execute(query)}

    def parked_outbox_count(self, source: str) -> int:
        query = sa.select(sa.func.count()).where(
            parked.c.kind == PARKED_OUTBOX_ROW,
            parked.c.source == source,
            parked.c.status == "parked",
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def parked_outbox_counts(self) -> dict[str, int]:
        """Source -> its outbox rows parked, in one query (sources without any left out)."""
        query = (
            sa.select(parked.c.source, sa.func.count())
            .where(parked.c.kind == PARKED_OUTBOX_ROW, parked.c.status == "parked")
            .group_by(parked.c.source)
        )
        with self.engine.connect() as conn:
            return {str(source): int(count) for source, count in conn.execute(query)}


def envelope_from_row(row: Any) -> Envelope:
    occurred = row["occurred_at"]
    if occurred is not None and occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    return Envelope(
        event_id=row["event_id"],
        source=row["source"],
        tenant=row["tenant"],
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        event_type=row["event_type"],
        payload=row["payload"],
        headers=row["headers"] or {},
        occurred_at=occurred,
        position=row["position"],
    )


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    occurred = row[-1]
    if isinstance(occurred, datetime):
        occurred = occurred.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return (*row[:-1], occurred)
