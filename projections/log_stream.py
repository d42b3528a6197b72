"""Reading the event log in large batches for a rebuild, and garbage collection between them.

Unlike :class:`projections.log_reader.LogReader` (one lane's range, cached for the other
lanes), a rebuild reads a whole source once, in order: through a server-side cursor on
PostgreSQL, ``yield_per`` on SQLite, with a thread fetching and decoding the next batch
while the caller writes the current one.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Full, Queue
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error
from outbox.envelope import Envelope
from outbox.errors import EventLogError
from outbox.log import envelope_from_row
from outbox.schema import event_log
from projections.log_reader import PG_EVENT_COLUMNS, envelope_from_pg_row


def stream_batches(
    engine: sa.Engine,
    source: str,
    after: int,
    upto: int,
    types: list[str],
    *,
    tenant: str | None = None,
    batch_size: int,
    depth: int = 2,
) -> Iterator[list[Envelope]]:
    """Events of ``source`` of ``types`` in ``(after, upto]`` (of ``tenant`` if given), in
    position order, in batches of ``batch_size``, read ahead by a thread up to ``depth``
    batches."""
    if upto <= after:
        return
    if engine.dialect.name == "postgresql":
        batches = _stream_postgresql(engine, source, after, upto, types, tenant, batch_size)
    else:
        batches = _stream_sqlite(engine, source, after, upto, types, tenant, batch_size)
    try:
        yield from read_ahead(batches, depth)
    except (SQLAlchemyError, psycopg.Error) as exc:
        raise EventLogError(f"reading the event log failed: {describe_db_error(exc)}") from exc


def _stream_postgresql(
    engine: sa.Engine,
    source: str,
    after: int,
    upto: int,
    types: list[str],
    tenant: str | None,
    batch_size: int,
) -> Iterator[list[Envelope]]:
    statement = (
        f"SELECT {PG_EVENT_COLUMNS} FROM rm_event_log WHERE source = %s AND position > %s "
        "AND position <= %s AND event_type = ANY(%s)"
    )
    params: list[Any] = [source, after, upto, types]
    if tenant is not None:
        statement += " AND tenant = %s"
        params.append(tenant)
    statement += " ORDER BY position"
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        with driver.cursor(name=f"rm_replay_{os.getpid()}") as cursor:  # type: ignore[union-attr]
            cursor.itersize = batch_size
            cursor.execute(statement, params)
            while rows := cursor.fetchmany(batch_size):
                yield [envelope_from_pg_row(source, row) for row in rows]
        conn.rollback()


def _stream_sqlite(
    engine: sa.Engine,
    source: str,
    after: int,
    upto: int,
    types: list[str],
    tenant: str | None,
    batch_size: int,
) -> Iterator[list[Envelope]]:
    c = event_log.c
    query = (
        sa.select(event_log)
        .where(c.source == source, c.position > after, c.position <= upto)
        .where(c.event_type.in_(types))
        .order_by(c.position)
    )
    if tenant is not None:
        query = query.where(c.tenant == tenant)
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=batch_size).execute(query)
        for rows in result.partitions():
            yield [envelope_from_row(row._mapping) for row in rows]


_DONE = object()


def read_ahead(batches: Iterator[list[Envelope]], depth: int = 2) -> Iterator[list[Envelope]]:
    """``batches``, read by a thread up to ``depth`` batches ahead: the next batch is fetched
    and decoded while the database writes the current one (the driver releases the GIL)."""
    queue: Queue[Any] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        queue.put(batch, timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    break
            item: Any = _DONE
        except BaseException as exc:  # handed to the consumer
            item = exc
        finally:
            with contextlib.suppress(Exception):
                batches.close()  # type: ignore[attr-defined]
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return
            except Full:
                continue

    thread = threading.Thread(target=produce, name="replay-log-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


# -- garbage collection between batches ---------------------------------------------------

# Batches. A young pass scans about the batches in hand (~150 ms for 3 batches of 20,000)
# and finds next to nothing: rebuild garbage is acyclic and freed by reference counting.
_YOUNG_COLLECTION_EVERY = 25
_FULL_COLLECTION_EVERY = 100
_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = True
_gc_batches = 0


@contextmanager
def batch_gc() -> Iterator[None]:
    """Cyclic garbage collection between batches instead of during them.

    A batch keeps tens of thousands of young objects alive (envelopes, payloads, pending
    rows) until it commits, so the collector's allocation-driven passes keep scanning and
    promoting them, and its full passes rescan the whole heap: a third of a rebuild's CPU.
    While a replay runs, automatic collection is off and :func:`collect_batch` collects
    the young generations every few batches (the whole heap now and then)."""
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
        _gc_holders += 1
        gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


def collect_batch() -> None:
    """Called after each batch inside :func:`batch_gc`."""
    global _gc_batches
    _gc_batches += 1
    if _gc_batches % _FULL_COLLECTION_EVERY == 0:
        gc.collect()
    elif _gc_batches % _YOUNG_COLLECTION_EVERY == 0:
        gc.collect(1)
