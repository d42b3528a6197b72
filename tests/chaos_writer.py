"""A paced outbox writer for the relay fault-injection test (run as a subprocess).

    python -m tests.chaos_writer --url DSN --events 20000 --aggregates 500 \
        --seconds 10 --writers 4 --seed 7 --summary out.json

Commits ``--events`` events over ``--aggregates`` aggregates into the ``outbox``
table at ``--url`` in small transactions (1 to ``--max-batch`` events each),
spread evenly over about ``--seconds`` seconds. ``--writers`` threads write at
once, each with its own connection and its own disjoint set of aggregates, so
their transactions interleave (outbox positions are not in commit order across
writers) while every aggregate's events are still committed one after the other.

Each event's payload is ``{"agg": AGGREGATE_ID, "k": K, "w": WRITER, "t": T}``,
where K counts that aggregate's events from 1 in commit order and T numbers the
writer's transactions from 1 (events with equal W and T committed together). A
transaction the server rolls back (deadlock, lock wait timeout) is retried whole,
with the same events; nothing is counted until it commits. The summary file
records how many events each aggregate got; the exit status is 0 only when every
event committed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from outbox.db import create_engine

AGGREGATE_TYPE = "chaos"
EVENT_TYPE = "Ticked"
_INSERT = sa.text(
    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
    "VALUES (:aggregate_type, :aggregate_id, :event_type, :payload)"
)
_RETRIES = 20


def aggregate_name(index: int) -> str:
    """The aggregate id of aggregate number ``index``."""
    return f"agg-{index:04d}"


def split_events(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class Writer(threading.Thread):
    """One writer: commits its share of the events for the aggregates it owns."""

    def __init__(
        self,
        number: int,
        engine: sa.Engine,
        aggregates: list[str],
        events: int,
        seconds: float,
        max_batch: int,
        seed: int,
        start_at: float,
    ) -> None:
        super().__init__(name=f"writer-{number}", daemon=True)
        self.number = number
        self.engine = engine
        self.aggregates = aggregates
        self.events = events
        self.seconds = seconds
        self.max_batch = max_batch
        self.rng = random.Random(seed * 1000 + number)
        self.start_at = start_at
        self.counts: dict[str, int] = dict.fromkeys(aggregates, 0)
        self.committed = 0
        self.transactions = 0
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._write_all()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _write_all(self) -> None:
        with self.engine.connect() as conn:
            while self.committed < self.events:
                size = min(self.rng.randint(1, self.max_batch), self.events - self.committed)
                chosen = [self.rng.choice(self.aggregates) for _ in range(size)]
                self._commit(conn, chosen)
                self._pace()

    def _commit(self, conn: sa.Connection, chosen: list[str]) -> None:
        """Commit one transaction with one event per entry of ``chosen``, retrying rollbacks."""
        counts = dict(self.counts)
        rows = []
        for aggregate in chosen:
            counts[aggregate] += 1
            payload = {
                "agg": aggregate,
                "k": counts[aggregate],
                "w": self.number,
                "t": self.transactions + 1,
            }
            rows.append(
                {
                    "aggregate_type": AGGREGATE_TYPE,
                    "aggregate_id": aggregate,
                    "event_type": EVENT_TYPE,
                    "payload": json.dumps(payload),
                }
            )
        for attempt in range(_RETRIES + 1):
            try:
                # One statement per row: rows get outbox positions in this order.
                for row in rows:
                    conn.execute(_INSERT, row)
                conn.commit()
            except DBAPIError as exc:
                conn.rollback()
                if attempt == _RETRIES or not _is_transient(exc):
                    raise
                self.retries += 1
                time.sleep(0.01 * (attempt + 1))
                continue
            break
        self.counts = counts
        self.committed += len(rows)
        self.transactions += 1

    def _pace(self) -> None:
        due = self.start_at + self.seconds * self.committed / self.events
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _is_transient(exc: DBAPIError) -> bool:
    """A rollback the server chose (the transaction did not commit, so retrying is safe)."""
    if exc.connection_invalidated:
        return False
    code = getattr(exc.orig, "sqlstate", None)
    if code in {"40001", "40P01", "55P03"}:
        return True
    args = getattr(exc.orig, "args", ())
    return bool(args) and args[0] in {1205, 1213}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="DSN of the database holding the outbox")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--aggregates", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="spread writes over this")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=20, help="most events per transaction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary", type=Path, help="write per-aggregate counts here (JSON)")
    args = parser.parse_args(argv)
    if not 1 <= args.writers <= args.aggregates:
        parser.error("--writers must be between 1 and --aggregates")

    names = [aggregate_name(i) for i in range(args.aggregates)]
    engine = create_engine(args.url, pool_size=args.writers, max_overflow=0)
    start_at = time.monotonic()
    writers = [
        Writer(
            number,
            engine,
            names[number :: args.writers],
            share,
            args.seconds,
            args.max_batch,
            args.seed,
            start_at,
        )
        for number, share in enumerate(split_events(args.events, args.writers))
    ]
    try:
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
    finally:
        engine.dispose()
    elapsed = time.monotonic() - start_at

    counts: dict[str, int] = {}
    for writer in writers:
        counts.update(writer.counts)
    failed = [w for w in writers if w.error is not None]
    summary = {
        "events": sum(counts.values()),
        "transactions": sum(w.transactions for w in writers),
        "retries": sum(w.retries for w in writers),
        "seconds": round(elapsed, 3),
        "errors": [f"{w.name}: {w.error!r}" for w in failed],
        "counts": counts,
    }
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(
        f"committed {summary['events']} events in {summary['transactions']} transactions "
        f"({summary['retries']} retried) in {elapsed:.1f}s",
        file=sys.stderr,
    )
    for line in summary["errors"]:
        print(line, file=sys.stderr)
    return 1 if failed or summary["events"] != args.events else 0


if __name__ == "__main__":
    sys.exit(main())
