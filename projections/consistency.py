"""Read-your-writes: wait, bounded, until a projection has applied a given event.

A caller that just committed an outbox row passes a :class:`ConsistencyToken`:
the event's id (what the relay stores as ``event_id`` in the log: the outbox
``id`` column, or ``<source>:<outbox position>`` for a source configured with
``columns.event_id = ""``), or its log position ``<source>:<position>``. The wait
first sees the event reach the log (the relay may not have moved it yet), then the
checkpoint of the lane that owns it (projection, source, aggregate hash mod
partitions) reach its position. An event of a type the projection ignores counts
as applied once its lane has applied the events before it that the projection reads
(at once when there are none: the relay does not wake a lane for a type its
projection ignores); an event of a source the projection does not read at once.

Polls with backoff (2 ms growing to 50 ms): one indexed read per poll.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error
from outbox.envelope import aggregate_hash
from outbox.errors import LogError, ReadmodelError
from outbox.schema import PARKED_OUTBOX_ROW, event_log, log_heads, parked
from projections.api import Projection
from projections.query_errors import QueryError
from projections.store import Lane, Store
from projections.store_tables import failures, parked_events

_POSITION = re.compile(
    r"(?P<source>[A-Za-z0-9_.-]{1,100}(?::[A-Za-z0-9_.-]{1,100})?):(?P<position>\d+)"
)  # whole tokens only (fullmatch)  # a member source of a group is named group:member
_FIRST_SLEEP = 0.002
_MAX_SLEEP = 0.05
_FAILURES = 200  # failing events of a source looked at for the awaited event's lane


@dataclass(frozen=True, slots=True)
class ConsistencyToken:
    """An event to wait for: by ``event_id``, or by log ``source`` and ``position``.

    As text (:meth:`parse`, the ``--wait-for`` option): ``SOURCE:POSITION`` is a log
    position; ``event:ID`` an event id; anything else is taken as an event id. An
    event id derived from the outbox position looks like ``orders:17`` and must be
    written ``event:orders:17``.
    """

    event_id: str | None = None
    source: str | None = None
    position: int | None = None

    def __post_init__(self) -> None:
        by_position = self.source is not None and self.position is not None
        if (self.event_id is None) == (not by_position):
            raise ValueError("a consistency token is an event_id, or a source and a position")

    @classmethod
    def parse(cls, text: str) -> ConsistencyToken:
        text = text.strip()
        if text.startswith("event:"):
            event_id = text[len("event:") :]
            if not event_id:
                raise QueryError("consistency token 'event:' lacks the event id")
            return cls(event_id=event_id)
        match = _POSITION.fullmatch(text)
        if match:
            position = int(match["position"])
            if position >= 2**63:  # log positions are BIGINT
                raise QueryError(f"consistency token {text!r}: position is out of range")
            return cls(source=match["source"], position=position)
        if not text:
            raise QueryError("empty consistency token")
        return cls(event_id=text)

    @classmethod
    def at(cls, source: str, position: int) -> ConsistencyToken:
        return cls(source=source, position=position)

    @classmethod
    def of_event(cls, event_id: str) -> ConsistencyToken:
        return cls(event_id=event_id)

    def __str__(self) -> str:
        if self.event_id is not None:
            return f"event:{self.event_id}"
        return f"{self.source}:{self.position}"


class ConsistencyError(ReadmodelError):
    """The projection has not applied the awaited event (base of the two below)."""

    def __init__(self, message: str, token: ConsistencyToken, projection: str) -> None:
        super().__init__(message)
        self.token = token
        self.projection = projection


class ConsistencyTimeout(ConsistencyError):
    """The projection did not apply the event within the timeout; ``checkpoint`` is how far
    the event's lane got (``None`` when the event had not reached the log)."""

    def __init__(
        self,
        message: str,
        token: ConsistencyToken,
        projection: str,
        *,
        position: int | None = None,
        checkpoint: int | None = None,
    ) -> None:
        super().__init__(message, token, projection)
        self.position = position
        self.checkpoint = checkpoint


class ConsistencyParked(ConsistencyError):
    """The event is parked (for this projection, or by the relay as a malformed row):
    waiting longer would not help."""


@dataclass(frozen=True, slots=True)
class Reached:
    """The projection has applied (or passed) the token's event."""

    token: ConsistencyToken
    source: str
    position: int
    lane: Lane | None
    checkpoint: int | None
    waited: float


@dataclass(frozen=True, slots=True)
class _Located:
    source: str
    position: int
    aggregate_type: str
    aggregate_id: str
    event_type: str

    def describe(self) -> str:
        return (
            f"{self.source}:{self.position} "
            f"({self.event_type} of {self.aggregate_type}:{self.aggregate_id})"
        )


class ConsistencyWaiter:
    """Waits for tokens against one event log; stores are found per projection."""

    def __init__(
        self,
        log_engine: sa.Engine,
        store_of: Callable[[Projection], Store],
        sources: Iterable[str] = (),
    ) -> None:
        self.log_engine = log_engine
        self.store_of = store_of
        self.configured_sources = set(sources)

    def wait(self, projection: Projection, token: ConsistencyToken, timeout: float) -> Reached:
        """Return once ``projection`` has applied ``token``'s event; raise
        :class:`ConsistencyTimeout` after ``timeout`` seconds, or
        :class:`ConsistencyParked` as soon as the event is known to be parked."""
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        sleep = _FIRST_SLEEP
        try:
            located = self._locate(projection, token)
            while located is None:
                if time.monotonic() >= deadline:
                    raise self._not_in_log(projection, token, timeout)
                sleep = _pause(sleep, deadline)
                located = self._locate(projection, token)
            if not projection.reads(located.source):
                return Reached(token, located.source, located.position, None, None, _since(started))
            partition = aggregate_hash(located.aggregate_type, located.aggregate_id)
            lane = Lane(projection.name, located.source, partition % projection.partitions)
            store = self.store_of(projection)
            needed: int | None = None
            while True:
                checkpoint = store.checkpoint(lane)
                if needed is None:
                    needed = self._needed(projection, located, lane, checkpoint)
                if checkpoint >= needed:
                    self._check_parked(projection, token, located, store)
                    return Reached(
                        token, located.source, located.position, lane, checkpoint, _since(started)
                    )
                if time.monotonic() >= deadline:
                    raise self._behind(projection, token, located, lane, checkpoint, timeout)
                sleep = _pause(sleep, deadline)
        except SQLAlchemyError as exc:
            raise LogError(
                f"waiting for {token} on {projection.name!r} failed: {describe_db_error(exc)}"
            ) from exc

    def _needed(
        self, projection: Projection, located: _Located, lane: Lane, checkpoint: int
    ) -> int:
        """The checkpoint at which ``lane`` has applied the awaited event: its position, or for
        a type the projection ignores (no message wakes the lane for it), that of the last
        event before it the lane reads (``checkpoint`` when none)."""
        if checkpoint >= located.position or projection.subscribes(
            located.source, located.event_type
        ):
            return located.position
        c = event_log.c
        part = c.key_hash % projection.partitions if projection.partitions > 1 else sa.literal(0)
        query = sa.select(sa.func.max(c.position)).where(
            c.source == located.source,
            c.position > checkpoint,
            c.position < located.position,
            c.event_type.in_(projection.event_types(located.source)),
            part == lane.partition,
        )
        with self.log_engine.connect() as conn:
            found = conn.execute(query).scalar()
        return checkpoint if found is None else int(found)

    # -- finding the event ---------------------------------------------------------

    def _sources(self) -> list[str]:
        with self.log_engine.connect() as conn:
            logged = set(conn.execute(sa.select(log_heads.c.source)).scalars())
        return sorted(self.configured_sources | logged)

    def _locate(self, projection: Projection, token: ConsistencyToken) -> _Located | None:
        columns = (
            event_log.c.source,
            event_log.c.position,
            event_log.c.aggregate_type,
            event_log.c.aggregate_id,
            event_log.c.event_type,
        )
        if token.event_id is not None:
            query = sa.select(*columns).where(
                event_log.c.source.in_(self._sources()), event_log.c.event_id == token.event_id
            )
        else:
            if token.source not in self.configured_sources and token.source not in (
                known := self._sources()
            ):
                # A tenant's read is told none: they name other tenants (``pos:globex``).
                listed = (
                    "the known ones are not shown to tenant reads"
                    if projection.tenant_column is not None
                    else f"known: {', '.join(known) or 'none'}"
                )
                raise QueryError(
                    f"consistency token {token}: unknown source {token.source!r} ({listed})"
                )
            query = sa.select(*columns).where(
                event_log.c.source == token.source, event_log.c.position == token.position
            )
        with self.log_engine.connect() as conn:
            rows = conn.execute(query.order_by(event_log.c.position)).all()
            if not rows and token.event_id is not None:
                self._check_malformed(conn, projection, token)
        if not rows:
            return None
        # An id present in several sources: the one the projection reads, else the first.
        rows.sort(key=lambda r: not projection.reads(r.source))
        return _Located(*rows[0])

    def _check_malformed(
        self, conn: sa.Connection, projection: Projection, token: ConsistencyToken
    ) -> None:
        row = conn.execute(
            sa.select(parked.c.id, parked.c.source, parked.c.reason)
            .where(
                parked.c.kind == PARKED_OUTBOX_ROW,
                parked.c.event_id == token.event_id,
                parked.c.status == "parked",
            )
            .limit(1)
        ).first()
        if row is not None:
            raise ConsistencyParked(
                f"{token} will never reach projection {projection.name!r}: the relay parked it "
                f"as a malformed outbox row of source {row.source!r} ({row.reason}); "
                f"see 'readmodel parked show {row.id}'",
                token,
                projection.name,
            )

    def _check_parked(
        self, projection: Projection, token: ConsistencyToken, located: _Located, store: Store
    ) -> None:
        entry = _parked_entry(store, projection.name, located)
        if entry is not None and entry[2] == "skipped":
            raise ConsistencyParked(
                f"projection {projection.name!r} will never apply {located.describe()} awaited "
                f"by {token}: it was parked ({entry[1]}), then skipped "
                f"('readmodel parked skip')",
                token,
                projection.name,
            )
        if entry is not None:
            entry_id, reason, _ = entry
            raise ConsistencyParked(
                f"projection {projection.name!r} parked {located.describe()} awaited by {token}: "
                f"{reason}; it stays unapplied until 'readmodel parked retry e{entry_id}' "
                f"(or skip)",
                token,
                projection.name,
            )

    # -- timeout messages ----------------------------------------------------------

    def _not_in_log(
        self, projection: Projection, token: ConsistencyToken, timeout: float
    ) -> ConsistencyTimeout:
        if token.event_id is not None:
            where = f"event id {token.event_id!r} is not in the event log yet"
        else:
            with self.log_engine.connect() as conn:
                head = conn.execute(
                    sa.select(log_heads.c.head).where(log_heads.c.source == token.source)
                ).scalar()
            where = f"the log of source {token.source!r} reaches only position {int(head or 0)}"
        return ConsistencyTimeout(
            f"projection {projection.name!r} has not applied {token} within {timeout:g}s: "
            f"{where} (is the relay running?)",
            token,
            projection.name,
        )

    def _behind(
        self,
        projection: Projection,
        token: ConsistencyToken,
        located: _Located,
        lane: Lane,
        checkpoint: int,
        timeout: float,
    ) -> ConsistencyTimeout:
        message = (
            f"projection {projection.name!r} has not applied {token} within {timeout:g}s: "
            f"it is {located.describe()}, in lane {lane.source}/{lane.partition}, "
            f"whose checkpoint is at {checkpoint} ({located.position - checkpoint} behind)"
        )
        failures = _failures(self.store_of(projection), projection.name, located, checkpoint)
        failing = self._first_in_lane(failures, lane, projection.partitions)
        if failing is not None:
            attempts, position, error = failing
            message += (
                f"; the handler of {located.source}:{position} failed {attempts} time(s) "
                f"so far: {error}"
            )
        else:
            message += " (are workers running?)"
        return ConsistencyTimeout(
            message,
            token,
            projection.name,
            position=located.position,
            checkpoint=checkpoint,
        )

    def _first_in_lane(
        self, failures: list[tuple[int, int, str]], lane: Lane, partitions: int
    ) -> tuple[int, int, str] | None:
        """The first of ``failures`` (``(attempts, position, error)``) whose event is in
        ``lane``: a failing event of another lane of the source holds nothing of this one."""
        if not failures:
            return None
        with self.log_engine.connect() as conn:
            hashes = dict(
                conn.execute(
                    sa.select(event_log.c.position, event_log.c.key_hash).where(
                        event_log.c.source == lane.source,
                        event_log.c.position.in_([position for _, position, _ in failures]),
                    )
                ).all()
            )
        return next(
            (
                failure
                for failure in failures
                if failure[1] in hashes and int(hashes[failure[1]]) % partitions == lane.partition
            ),
            None,
        )


def _parked_entry(store: Store, projection: str, located: _Located) -> tuple[int, str, str] | None:
    """``(id, reason, status)`` of the event's entry, parked or skipped (never applied)."""
    engine = getattr(store, "engine", None)
    if isinstance(engine, sa.Engine):
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(parked_events.c.id, parked_events.c.reason, parked_events.c.status).where(
                    parked_events.c.projection == projection,
                    parked_events.c.source == located.source,
                    parked_events.c.position == located.position,
                    parked_events.c.status.in_(["parked", "skipped"]),
                )
            ).first()
        return None if row is None else (int(row.id), str(row.reason), str(row.status))
    for status in ("parked", "skipped"):
        for entry in store.parked(projection, status=status):
            if (entry.source, entry.position) == (located.source, located.position):
                return entry.id, entry.reason, status
    return None


def _failures(
    store: Store, projection: str, located: _Located, checkpoint: int
) -> list[tuple[int, int, str]]:
    """``(attempts, position, error)`` of the failing events of the awaited event's source
    between the lane's checkpoint and the awaited one (one of its lane may hold it), the
    first ones by position."""
    engine = getattr(store, "engine", None)
    if not isinstance(engine, sa.Engine):
        failing = getattr(store, "failing", None)  # a document store
        found = (
            []
            if failing is None
            else failing(projection, located.source, after=checkpoint, upto=located.position)
        )
        return [
            (int(f["attempts"]), int(f["position"]), str(f["last_error"]))
            for f in found[:_FAILURES]
        ]
    with engine.connect() as conn:
        rows: Any = conn.execute(
            sa.select(failures.c.attempts, failures.c.position, failures.c.last_error)
            .where(
                failures.c.projection == projection,
                failures.c.source == located.source,
                failures.c.position > checkpoint,
                failures.c.position <= located.position,
            )
            .order_by(failures.c.position)
            .limit(_FAILURES)
        ).all()
    return [(int(r.attempts), int(r.position), str(r.last_error)) for r in rows]


def _pause(sleep: float, deadline: float) -> float:
    time.sleep(max(0.0, min(sleep, deadline - time.monotonic())))
    return min(sleep * 1.5, _MAX_SLEEP)


def _since(started: float) -> float:
    return time.monotonic() - started
