"""Replay benchmark: rebuild an order-summary projection from the event log, beside live apply.

Usage: ``.venv/bin/python bench/replay.py [--json] [--events N] [--live-events N]``.

A throw-away PostgreSQL database gets ``--events`` events (default 1,000,000) of one source
(``shop``), written straight into ``rm_event_log`` with COPY: customers registering, then
orders placed with two to four line items each, paid and shipped.
:class:`bench.replay_model.OrderSummary` keeps three tables: customers (the e-mail lookup),
orders (with the customer's e-mail, status, totals) and order lines; a realistic handler
with typed payloads that reads the customer and the order it updates.

``replay_throughput`` (events/s)
    ``readmodel replay`` as :class:`projections.replay.Replayer` runs it: a blue/green
    rebuild of the whole log into shadow tables, the swap included. The clock runs from
    the call to its return; the rebuilt model is then checked (one row per order, line
    counts exact).

Baseline: live apply (events/s)
    :class:`projections.engine.ProjectionEngine` applying the first ``--live-events``
    events of the same log lane by lane (``engine.batch_size`` events per transaction,
    row locks and per-batch checkpoints, as the workers do), in the same run, before the
    replay. ``ratio = replay / live``.

``replay_vs_handwritten`` (events/s)
    The same replay figure beside the same rebuild written by hand, with no framework
    (``bench/replay_handwritten.py``), measured after it: the fastest this rebuild goes in
    Python on the machine, for scale (no target). ``ratio = replay / hand-written``. Its
    tables must equal the replay's, row for row, or the bench fails.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa

from bench.common import Figure, print_figures
from bench.replay_handwritten import differences, handwritten_rebuild
from bench.replay_model import SOURCE, OrderSummary, lines, orders
from outbox.db import libpq_conninfo
from outbox.envelope import aggregate_hash
from outbox.log import EventLog
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.replay import Replayer, ReplayOptions
from projections.sql_store import SqlStore
from workers.logs import configure_logging

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
THROUGHPUT_TARGET = 50_000.0
RATIO_TARGET = 2.0

# -- data --------------------------------------------------------------------------------


def generate(total: int, seed: int = 11) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """``(aggregate_type, aggregate_id, event_type, payload)``: 2% customers, then orders
    (placed, paid, shipped) interleaved."""
    rng = random.Random(seed)
    n_customers = max(1, total // 50)
    for i in range(n_customers):
        yield "customer", f"c{i}", "CustomerRegistered", {"email": f"c{i}@example.com"}
    made = n_customers
    order = 0
    pending: list[tuple[str, str]] = []
    while made < total:
        if pending and (rng.random() < 0.6 or len(pending) > 500):
            order_id, kind = pending.pop(rng.randrange(len(pending)))
            yield "order", order_id, kind, {"at": "2024-05-01T10:00:00Z"}
            if kind == "OrderPaid":
                pending.append((order_id, "OrderShipped"))
        else:
            order += 1
            order_id = f"o{order}"
            count = rng.randint(2, 4)
            payload = {
                "customer_id": f"c{rng.randrange(n_customers)}",
                "lines": [
                    {
                        "sku": f"sku-{rng.randrange(5000)}",
                        "title": f"Product {rng.randrange(5000)}",
                        "quantity": rng.randint(1, 3),
                        "price_cents": rng.randint(100, 20_000),
                    }
                    for _ in range(count)
                ],
            }
            yield "order", order_id, "OrderPlaced", payload
            pending.append((order_id, "OrderPaid"))
        made += 1


def write_log(dsn: str, total: int) -> int:
    """COPY ``total`` events into ``rm_event_log``; returns how many orders were placed."""
    placed = 0
    now = datetime.now(UTC)
    columns = "source, position, event_id, aggregate_type, aggregate_id, key_hash, event_type, "
    columns += "payload, occurred_at"
    with psycopg.connect(libpq_conninfo(dsn)) as conn:
        with conn.cursor().copy(f"COPY rm_event_log ({columns}) FROM STDIN") as copy:
            for position, (atype, aid, etype, payload) in enumerate(generate(total), start=1):
                placed += etype == "OrderPlaced"
                copy.write_row(
                    (
                        SOURCE,
                        position,
                        str(uuid.UUID(int=zlib.crc32(str(position).encode()) << 64 | position)),
                        atype,
                        aid,
                        aggregate_hash(atype, aid),
                        etype,
                        orjson.dumps(payload).decode(),
                        now,
                    )
                )
        conn.execute("INSERT INTO rm_log_heads (source, head) VALUES (%s, %s)", (SOURCE, total))
        conn.execute("ANALYZE rm_event_log")
    return placed


@contextlib.contextmanager
def bench_database(admin_dsn: str) -> Iterator[str]:
    name = f"rm_bench_replay_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_conninfo(admin_dsn), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(admin_dsn).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_conninfo(admin_dsn), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- measuring ---------------------------------------------------------------------------


def measure(dsn: str, events: int, live_events: int, batch_size: int | None) -> dict[str, float]:
    log = EventLog(dsn)
    log.create_tables()
    store = SqlStore(dsn, engine=log.engine)
    projection = OrderSummary()
    store.create_tables([projection])
    placed = write_log(dsn, events)
    reader = LogReader(log)
    engine = ProjectionEngine(reader, [projection], {"default": store}, batch_size=2000)
    try:
        started = time.perf_counter()
        live_applied = 0
        for lane in engine.lanes(projection):
            live_applied += engine.process(lane, min(live_events, events)).applied
        live_seconds = time.perf_counter() - started

        replayer = Replayer(reader, projection, store, batch_size=batch_size)
        started = time.perf_counter()
        summary = replayer.run(ReplayOptions())
        replay_seconds = time.perf_counter() - started
        with log.engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
            line_rows = conn.execute(sa.select(sa.func.count()).select_from(lines)).scalar_one()
            items = conn.execute(sa.select(sa.func.sum(orders.c["items"]))).scalar_one()
        if rows != placed or line_rows != items or summary.events != events:
            raise RuntimeError(
                f"rebuilt model is wrong: {rows} orders of {placed}, {line_rows} lines of "
                f"{items}, {summary.events} events of {events}"
            )
        handwritten_events, handwritten_seconds = handwritten_rebuild(dsn)
        unequal = {name: n for name, n in differences(dsn).items() if n}
        if unequal or handwritten_events != events:
            raise RuntimeError(
                f"the hand-written rebuild differs from the replay's: {unequal} rows differ, "
                f"{handwritten_events} events of {events}"
            )
    finally:
        engine.close()
        log.close()
    return {
        "events": events,
        "replay_seconds": replay_seconds,
        "replay_rate": summary.events / replay_seconds,
        "live_events": live_applied,
        "live_seconds": live_seconds,
        "live_rate": live_applied / live_seconds,
        "handwritten_seconds": handwritten_seconds,
        "handwritten_rate": events / handwritten_seconds,
    }


def figures(result: dict[str, float]) -> list[Figure]:
    rate, live = result["replay_rate"], result["live_rate"]
    return [
        Figure(
            "replay",
            "replay_throughput",
            rate,
            "events/s",
            live,
            f">= {THROUGHPUT_TARGET:,.0f} and >= {RATIO_TARGET:g}x live",
            rate >= THROUGHPUT_TARGET and rate >= RATIO_TARGET * live,
        ),
        Figure(
            "replay",
            "replay_vs_handwritten",
            rate,
            "events/s",
            result["handwritten_rate"],
            "- (for scale)",
            None,
        ),
    ]


def print_table(rows: list[Figure], result: dict[str, float]) -> None:
    console = print_figures(
        "replay: blue/green rebuild of order_summary from the event log",
        ("replay", "baseline"),
        rows,
    )
    console.print(
        f"replay: {result['events']:,.0f} events in {result['replay_seconds']:.2f} s (swap "
        f"included); live apply: {result['live_events']:,.0f} events in "
        f"{result['live_seconds']:.2f} s; hand-written rebuild (no framework): "
        f"{result['handwritten_seconds']:.2f} s",
        highlight=False,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="one JSON object per figure")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument(
        "--live-events", type=int, default=200_000, help="events the live apply baseline runs"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="replay batch size (Replayer's default)"
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL admin DSN")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")
    try:
        with bench_database(args.dsn) as dsn:
            result = measure(dsn, args.events, args.live_events, args.batch_size)
    except KeyboardInterrupt:
        print("interrupted; bench database dropped", file=sys.stderr)
        return 130
    rows = figures(result)
    if args.json:
        for row in rows:
            print(orjson.dumps(row.as_json()).decode())
    else:
        print_table(rows, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
