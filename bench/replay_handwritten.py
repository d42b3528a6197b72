"""The rebuild of ``bench/replay.py``'s projection written by hand, for scale.

No framework: a thread streams the log (a server-side cursor, 50,000 rows at a time,
``orjson`` for the payloads) while the main thread validates each payload with the
projection's own pydantic models, folds the three tables in dicts and, at the end, COPYs
them into ``handwritten_*`` tables in one transaction. Cyclic garbage collection is
paused, as the replay pauses it. Nothing of readmodel's guarantees is here (no
checkpoints, no error policy, no memory bound, no swap, no value checks): it is the
fastest this rebuild goes in Python on the machine, against which the replay's
overhead is read.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import orjson
import psycopg

from bench.replay_model import (
    SOURCE,
    CustomerRegistered,
    OrderPlaced,
    OrderUpdated,
    customers,
    lines,
    orders,
)
from outbox.db import libpq_conninfo
from projections.log_stream import batch_gc

HANDWRITTEN_PREFIX = "handwritten_"
_READ_SIZE = 50_000
_STATUS = {"OrderPaid": "paid", "OrderShipped": "shipped"}


def _read(dsn: str, parts: queue.Queue[Any]) -> None:
    try:
        with psycopg.connect(libpq_conninfo(dsn)) as conn, conn.transaction():
            cursor = conn.cursor(name="handwritten_log")
            cursor.execute(
                "SELECT aggregate_id, event_type, payload::text, occurred_at FROM rm_event_log"
                " WHERE source = %s ORDER BY position",
                (SOURCE,),
            )
            loads = orjson.loads
            while rows := cursor.fetchmany(_READ_SIZE):
                parts.put([(a, t, loads(p), at) for a, t, p, at in rows])
        parts.put(None)
    except BaseException as exc:  # noqa: BLE001 - handed to the folding thread
        parts.put(exc)


def handwritten_rebuild(dsn: str) -> tuple[int, float]:
    """Rebuild into ``handwritten_*`` tables; returns ``(events, seconds)``."""
    validators = {
        "CustomerRegistered": CustomerRegistered.__pydantic_validator__,
        "OrderPlaced": OrderPlaced.__pydantic_validator__,
        "OrderPaid": OrderUpdated.__pydantic_validator__,
        "OrderShipped": OrderUpdated.__pydantic_validator__,
    }
    folded_customers: dict[str, list[Any]] = {}
    folded_orders: dict[str, list[Any]] = {}
    folded_lines: list[tuple[Any, ...]] = []
    events = 0
    parts: queue.Queue[Any] = queue.Queue(maxsize=2)
    started = time.perf_counter()
    with batch_gc():
        reader = threading.Thread(target=_read, args=(dsn, parts), daemon=True)
        reader.start()
        while (part := parts.get()) is not None:
            if isinstance(part, BaseException):
                raise part
            events += len(part)
            for aggregate_id, event_type, payload, occurred_at in part:
                model = validators[event_type].validate_python(payload)
                if event_type == "OrderPlaced":
                    customer = folded_customers.get(model.customer_id)
                    total = 0
                    for number, line in enumerate(model.lines, start=1):
                        total += line.quantity * line.price_cents
                        folded_lines.append(
                            (aggregate_id, number, line.sku, line.title, line.quantity,
                             line.price_cents)
                        )  # fmt: skip
                    email = None if customer is None else customer[1]
                    folded_orders[aggregate_id] = [
                        aggregate_id, model.customer_id, email, "placed", len(model.lines),
                        total, occurred_at,
                    ]  # fmt: skip
                    if customer is None:
                        folded_customers[model.customer_id] = [model.customer_id, None, 1]
                    else:
                        customer[2] += 1
                elif event_type == "CustomerRegistered":
                    customer = folded_customers.get(aggregate_id)
                    if customer is None:
                        folded_customers[aggregate_id] = [aggregate_id, model.email, 0]
                    else:
                        customer[1] = model.email
                elif (order := folded_orders.get(aggregate_id)) is not None:
                    order[3] = _STATUS[event_type]
        reader.join()
        _copy_tables(
            dsn,
            [
                (customers, folded_customers.values()),
                (orders, folded_orders.values()),
                (lines, folded_lines),
            ],
        )
    return events, time.perf_counter() - started


def _copy_tables(dsn: str, tables: list[tuple[Any, Any]]) -> None:
    with psycopg.connect(libpq_conninfo(dsn)) as conn, conn.transaction():
        cursor = conn.cursor()
        for table, rows in tables:
            name = HANDWRITTEN_PREFIX + table.name
            cursor.execute(f'CREATE TABLE "{name}" (LIKE "{table.name}" INCLUDING ALL)')
            columns = ", ".join(f'"{column.name}"' for column in table.columns)
            with cursor.copy(f'COPY "{name}" ({columns}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)


def differences(dsn: str) -> dict[str, int]:
    """Rows in one of each model table and its hand-written twin but not the other."""
    found = {}
    with psycopg.connect(libpq_conninfo(dsn)) as conn:
        for table in (customers, orders, lines):
            name = HANDWRITTEN_PREFIX + table.name
            found[table.name] = conn.execute(
                f'SELECT (SELECT count(*) FROM (TABLE "{table.name}" EXCEPT ALL TABLE "{name}") a)'
                f' + (SELECT count(*) FROM (TABLE "{name}" EXCEPT ALL TABLE "{table.name}") b)'
            ).fetchone()[0]  # type: ignore[index]
    return found
