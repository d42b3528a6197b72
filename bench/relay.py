"""Relay benchmark: the PostgreSQL relay from outbox to event log, beside a naive relay.

Usage: ``.venv/bin/python bench/relay.py [--json] [--events N] [--latency-seconds S]``.

Two figures, each measured for readmodel's relay and for a naive relay in the same run,
on the same PostgreSQL server, in two throw-away databases (a service database holding
the outbox tables and a read-store database holding the logs) that are dropped on exit,
Ctrl-C and SIGTERM included.

The latency runs go first (the throughput runs leave dead rows to autovacuum).

``relay_throughput`` (events/s)
    The outbox is preloaded with ``--events`` events (COPY, ~60-byte JSON payloads,
    1,000 aggregates, then ``VACUUM ANALYZE`` as autovacuum would have done to a
    standing backlog). The clock runs around :meth:`outbox.relay.SourceRelay.drain`
    only (``on_dispatch = "delete"``, ``batch_size`` 2,000), which leaves every event in
    ``rm_event_log`` with gap-free positions; the run is checked afterwards (log head,
    empty outbox, nothing parked). The naive relay relays ``--naive-events`` events the
    way hand-written relays often do: one SELECT of the pending rows, then per row one
    INSERT into its log table and one UPDATE of the outbox row, each committed.

``relay_latency_p50`` / ``relay_latency_p99`` (ms)
    A writer process commits events at a steady ``--rate`` events/s (as many events
    per transaction as are due, normally one) and records ``time.time()`` right after
    each commit, keyed by event id. A watcher process polls the log from its own
    connection every ~1 ms (by position) and records when each event first appears.
    Latency = first seen - committed: the watcher's poll interval is included, so the
    figures are upper bounds by up to ~1 ms. The relay under test runs in this process,
    in a thread: :meth:`SourceRelay.run` woken by the outbox trigger's NOTIFY, or the
    naive relay re-running its SELECT every ``--naive-poll-ms``. Events committed in
    the first ``--warmup-seconds`` are relayed but not counted.

Each figure is printed beside the naive one with ``ratio = value / baseline``; with
``--json``, one JSON object per line per figure.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb

from bench.common import Figure, Latency, latency, print_figures
from config import RelaySettings, SourceSettings
from outbox.db import libpq_conninfo
from outbox.log import EventLog
from outbox.postgres import postgres_ddl
from outbox.relay import RelayHooks, SourceRelay
from outbox.sources import open_source
from workers.logs import configure_logging

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH_SIZE = 2000
AGGREGATES = 1000
THROUGHPUT_TARGET = 20_000.0
THROUGHPUT_RATIO_TARGET = 10.0
P99_TARGET_MS = 20.0
NAIVE_LOG_DDL = """
CREATE TABLE IF NOT EXISTS naive_log (
    source TEXT NOT NULL,
    position BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    tenant TEXT,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload JSONB NOT NULL,
    headers JSONB,
    occurred_at TIMESTAMPTZ,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
)
"""


# -- databases ---------------------------------------------------------------------


class Databases:
    """Creates uniquely named databases on the server and drops them all on :meth:`drop`."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.prefix = f"rm_bench_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []

    def create(self, suffix: str) -> str:
        """Create ``<prefix>_<suffix>`` and return its DSN."""
        name = f"{self.prefix}_{suffix}"
        with psycopg.connect(libpq_conninfo(self.admin_dsn), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return sa.make_url(self.admin_dsn).set(database=name).render_as_string(False)

    def drop(self) -> None:
        with psycopg.connect(libpq_conninfo(self.admin_dsn), autocommit=True) as conn:
            for name in reversed(self.created):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@contextlib.contextmanager
def bench_databases(admin_dsn: str) -> Iterator[tuple[str, str]]:
    """A source database and a log database, dropped on exit (Ctrl-C and SIGTERM too)."""
    databases = Databases(admin_dsn)
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield databases.create("src"), databases.create("log")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the drop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            databases.drop()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)


def _raise_keyboard_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def outbox_settings(source_url: str, table: str, **overrides: Any) -> SourceSettings:
    """Settings of one bench outbox table (``readmodel``'s defaults otherwise)."""
    return SourceSettings(
        url=source_url, table=table, on_dispatch="delete", batch_size=BATCH_SIZE, **overrides
    )


def create_outbox(settings: SourceSettings) -> None:
    """The table, indexes and NOTIFY trigger, as ``readmodel outbox init`` creates them."""
    with psycopg.connect(libpq_conninfo(settings.url), autocommit=True) as conn:
        for statement in postgres_ddl(settings):
            conn.execute(statement)


def create_naive_log(log_url: str) -> None:
    with psycopg.connect(libpq_conninfo(log_url), autocommit=True) as conn:
        conn.execute(NAIVE_LOG_DDL)


def event_row(i: int) -> tuple[str, str, str, str]:
    """``(aggregatetype, aggregateid, type, payload)`` of the i-th bench event."""
    payload = {"order_id": i, "customer": f"c{i % 997}", "total": 12.5, "currency": "EUR"}
    return "order", f"o{i % AGGREGATES}", "OrderPlaced", orjson.dumps(payload).decode()


def preload(source_url: str, table: str, count: int) -> None:
    """COPY ``count`` events into ``table``, then VACUUM ANALYZE it."""
    columns = "aggregatetype, aggregateid, type, payload"
    with psycopg.connect(libpq_conninfo(source_url), autocommit=True) as conn:
        with conn.cursor().copy(f'COPY "{table}" ({columns}) FROM STDIN') as copy:
            for i in range(count):
                copy.write_row(event_row(i))
        conn.execute(f'VACUUM ANALYZE "{table}"')


def outbox_count(source_url: str, table: str, pending_only: bool = False) -> int:
    where = " WHERE dispatched_at IS NULL" if pending_only else ""
    with psycopg.connect(libpq_conninfo(source_url)) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{table}"{where}').fetchone()
    return int(row[0]) if row else 0


# -- the naive relay ---------------------------------------------------------------


class NaiveRelay:
    """One SELECT of the pending rows, then per row: INSERT into the log, UPDATE the outbox.

    Every statement commits on its own (autocommit), as a hand-written relay would.
    """

    def __init__(self, source_url: str, log_url: str, table: str) -> None:
        self.table = table
        self.source = psycopg.connect(libpq_conninfo(source_url), autocommit=True)
        self.log = psycopg.connect(libpq_conninfo(log_url), autocommit=True)

    def relay_pending(self, stop: threading.Event | None = None) -> int:
        """Relay every row pending now (until ``stop`` is set); returns how many."""
        rows = self.source.execute(
            "SELECT seq, id, aggregatetype, aggregateid, type, payload, timestamp "
            f'FROM "{self.table}" WHERE dispatched_at IS NULL ORDER BY seq'
        ).fetchall()
        relayed = 0
        for seq, event_id, agg_type, agg_id, kind, payload, occurred in rows:
            if stop is not None and stop.is_set():
                break
            self.log.execute(
                "INSERT INTO naive_log (source, event_id, aggregate_type, aggregate_id, "
                "event_type, payload, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (self.table, str(event_id), agg_type, agg_id, kind, _jsonb(payload), occurred),
            )
            self.source.execute(
                f'UPDATE "{self.table}" SET dispatched_at = now() WHERE seq = %s', (seq,)
            )
            relayed += 1
        return relayed

    def run(self, stop: threading.Event, poll_seconds: float) -> None:
        while not stop.is_set():
            self.relay_pending(stop)
            stop.wait(poll_seconds)

    def close(self) -> None:
        self.source.close()
        self.log.close()


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value)


# -- throughput --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Throughput:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def real_throughput(source_url: str, log_url: str, events: int) -> Throughput:
    """Time :meth:`SourceRelay.drain` over a preloaded outbox of ``events`` rows."""
    settings = outbox_settings(source_url, "tp_outbox")
    create_outbox(settings)
    preload(source_url, "tp_outbox", events)
    log = EventLog(log_url)
    log.create_tables()
    source = open_source("tp", settings)
    relay = SourceRelay(source, log, RelaySettings())
    try:
        if not source.try_lead():
            raise RuntimeError("could not lead the bench source")
        log.head("tp")  # open the log's pooled connection before the clock starts
        started = time.perf_counter()
        totals = relay.drain()
        elapsed = time.perf_counter() - started
        _check_drained(totals.relayed, totals.parked, events, log.head("tp"))
    finally:
        source.close()
        log.close()
    if outbox_count(source_url, "tp_outbox"):
        raise RuntimeError("the relay left rows in the outbox")
    return Throughput(events, elapsed)


def _check_drained(relayed: int, parked: int, expected: int, head: int) -> None:
    if (relayed, parked, head) != (expected, 0, expected):
        raise RuntimeError(
            f"relay run is wrong: relayed {relayed}, parked {parked}, head {head}, "
            f"expected {expected}"
        )


def naive_throughput(source_url: str, log_url: str, events: int) -> Throughput:
    """Time :meth:`NaiveRelay.relay_pending` over a preloaded outbox of ``events`` rows."""
    create_outbox(outbox_settings(source_url, "naive_tp_outbox"))
    create_naive_log(log_url)
    preload(source_url, "naive_tp_outbox", events)
    naive = NaiveRelay(source_url, log_url, "naive_tp_outbox")
    try:
        started = time.perf_counter()
        relayed = naive.relay_pending()
        elapsed = time.perf_counter() - started
    finally:
        naive.close()
    if relayed != events or outbox_count(source_url, "naive_tp_outbox", pending_only=True):
        raise RuntimeError(f"naive relay relayed {relayed} of {events}")
    return Throughput(events, elapsed)


# -- latency: the writer and the watcher run in their own processes ---------------------


def write_steadily(
    source_url: str, table: str, rate: float, seconds: float
) -> list[tuple[str, float]]:
    """Commit ``rate * seconds`` events at a steady rate, starting once connected.

    Each transaction holds the events due by then (normally one; more only to catch
    up after a stall). Returns ``(event_id, commit time)`` per event, the time taken
    with ``time.time()`` right after COMMIT returned.
    """
    total = int(rate * seconds)
    ids = [str(uuid.uuid4()) for _ in range(total)]
    rows = [(ids[i], *event_row(i)) for i in range(total)]
    statement = (
        f'INSERT INTO "{table}" (id, aggregatetype, aggregateid, type, payload) '
        "VALUES (%s, %s, %s, %s, %s)"
    )
    committed: list[tuple[str, float]] = []
    with psycopg.connect(libpq_conninfo(source_url)) as conn, conn.cursor() as cursor:
        start = time.time()
        sent = 0
        while sent < total:
            due = min(total, int((time.time() - start) * rate) + 1)
            if due <= sent:
                _sleep_until(start + sent / rate)
                continue
            cursor.executemany(statement, rows[sent:due])
            conn.commit()
            now = time.time()
            committed.extend((event_id, now) for event_id in ids[sent:due])
            sent = due
    return committed


def watch_log(
    log_url: str, table: str, source: str, expected: int, patience: float, ready: Any
) -> dict[str, float]:
    """Poll ``table`` every ~1 ms; when each event id first appeared (epoch seconds).

    Sets ``ready`` once polling; stops when ``expected`` events were seen or after
    ``patience`` seconds.
    """
    query = (
        f"SELECT position, event_id FROM {table} WHERE source = %s AND position > %s "
        "ORDER BY position"
    )
    seen: dict[str, float] = {}
    after = 0
    with psycopg.connect(libpq_conninfo(log_url), autocommit=True) as conn:
        deadline = time.time() + patience
        ready.set()
        while len(seen) < expected and time.time() < deadline:
            rows = conn.execute(query, (source, after)).fetchall()
            now = time.time()
            for position, event_id in rows:
                seen.setdefault(event_id, now)
                after = max(after, position)
            time.sleep(0.001)
    return seen


def _start_ignoring_sigint(process: multiprocessing.process.BaseProcess) -> None:
    """Start ``process`` with Ctrl-C ignored from its first instruction: the parent stops it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)


def _child(name: str, function: Callable[..., Any], args: tuple[Any, ...], results: Any) -> None:
    """Process entry point: run ``function`` and put ``(name, result or error)`` on ``results``."""
    try:
        results.put((name, function(*args), None))
    except BaseException as exc:  # report anything to the parent, which raises it
        results.put((name, None, f"{type(exc).__name__}: {exc}"))


def measurelatency(
    source_url: str,
    log_url: str,
    *,
    table: str,
    log_table: str,
    source: str,
    run_relay: Callable[[threading.Event, threading.Event], None],
    rate: float,
    seconds: float,
    warmup: float,
) -> Latency:
    """Run ``run_relay(stop, leading)`` in a thread; once it sets ``leading``, a writer
    offers ``rate`` events/s to ``table`` and a watcher notes when each reaches the log."""
    total_seconds = warmup + seconds
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    watch_args = (log_url, log_table, source, int(rate * total_seconds), total_seconds + 60, ready)
    write_args = (source_url, table, rate, total_seconds)
    processes = [
        context.Process(target=_child, args=("watcher", watch_log, watch_args, results)),
        context.Process(target=_child, args=("writer", write_steadily, write_args, results)),
    ]
    stop, leading = threading.Event(), threading.Event()
    relay_thread = threading.Thread(
        target=run_relay, args=(stop, leading), name="bench-relay", daemon=True
    )
    try:
        relay_thread.start()
        if not leading.wait(60):
            raise RuntimeError("the relay did not start")
        _start_ignoring_sigint(processes[0])
        if not ready.wait(60):
            raise RuntimeError("the log watcher did not start")
        _start_ignoring_sigint(processes[1])
        outcome = _collect(results, 2, timeout=total_seconds + 120)
    finally:
        stop.set()
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
        relay_thread.join(timeout=30)
    return latency(outcome["writer"], outcome["watcher"], warmup)


def _collect(results: Any, count: int, timeout: float) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    while len(outcome) < count:
        name, value, error = results.get(timeout=timeout)
        if error is not None:
            raise RuntimeError(f"bench {name} failed: {error}")
        outcome[name] = value
    return outcome


class _LeadingHook(RelayHooks):
    """Sets ``event`` once the relay leads its source (and, with NOTIFY, listens)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_leadership(self, source: str, leading: bool) -> None:
        if leading:
            self.event.set()


def reallatency(source_url: str, log_url: str, args: argparse.Namespace) -> Latency:
    settings = outbox_settings(source_url, "lat_outbox")
    create_outbox(settings)
    log = EventLog(log_url)
    log.create_tables()

    def run(stop: threading.Event, leading: threading.Event) -> None:
        hooks = [_LeadingHook(leading)]
        SourceRelay(open_source("lat", settings), log, RelaySettings(), hooks).run(stop)

    try:
        return measurelatency(
            source_url,
            log_url,
            table="lat_outbox",
            log_table="rm_event_log",
            source="lat",
            run_relay=run,
            rate=args.rate,
            seconds=args.latency_seconds,
            warmup=args.warmup_seconds,
        )
    finally:
        log.close()


def naivelatency(source_url: str, log_url: str, args: argparse.Namespace) -> Latency:
    create_outbox(outbox_settings(source_url, "naive_lat_outbox"))
    create_naive_log(log_url)

    def run(stop: threading.Event, leading: threading.Event) -> None:
        naive = NaiveRelay(source_url, log_url, "naive_lat_outbox")
        leading.set()
        try:
            naive.run(stop, args.naive_poll_ms / 1000)
        finally:
            naive.close()

    return measurelatency(
        source_url,
        log_url,
        table="naive_lat_outbox",
        log_table="naive_log",
        source="naive_lat_outbox",
        run_relay=run,
        rate=args.rate,
        seconds=args.latency_seconds,
        warmup=args.warmup_seconds,
    )


def _sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


# -- report ------------------------------------------------------------------------


def figures(
    real_tp: Throughput, naive_tp: Throughput, real_lat: Latency, naive_lat: Latency
) -> list[Figure]:
    ratio_ok = real_tp.rate >= THROUGHPUT_RATIO_TARGET * naive_tp.rate
    return [
        Figure(
            "relay",
            "relay_throughput",
            real_tp.rate,
            "events/s",
            naive_tp.rate,
            f">= {THROUGHPUT_TARGET:,.0f} and >= {THROUGHPUT_RATIO_TARGET:.0f}x naive",
            real_tp.rate >= THROUGHPUT_TARGET and ratio_ok,
        ),
        Figure("relay", "relay_latency_p50", real_lat.p50_ms, "ms", naive_lat.p50_ms, "", None),
        Figure(
            "relay",
            "relay_latency_p99",
            real_lat.p99_ms,
            "ms",
            naive_lat.p99_ms,
            f"<= {P99_TARGET_MS:.0f} ms",
            real_lat.p99_ms <= P99_TARGET_MS,
        ),
    ]


def print_table(
    rows: list[Figure],
    real_tp: Throughput,
    naive_tp: Throughput,
    real_lat: Latency,
    naive_lat: Latency,
) -> None:
    console = print_figures(
        "relay: PostgreSQL outbox -> PostgreSQL event log", ("readmodel", "naive"), rows
    )
    for line in _notes(real_tp, naive_tp, real_lat, naive_lat):
        console.print(line, highlight=False)


def _notes(
    real_tp: Throughput, naive_tp: Throughput, real_lat: Latency, naive_lat: Latency
) -> list[str]:
    notes = [
        f"throughput: readmodel relayed {real_tp.events:,} events in {real_tp.seconds:.2f} s, "
        f"the naive relay {naive_tp.events:,} in {naive_tp.seconds:.2f} s",
        f"latency: commit -> visible in the log, at {real_lat.offered_rate:,.0f} / "
        f"{naive_lat.offered_rate:,.0f} events/s offered; {real_lat.samples:,} / "
        f"{naive_lat.samples:,} events counted, {real_lat.missing} / {naive_lat.missing} "
        "never seen (readmodel / naive)",
    ]
    load = naive_lat.offered_rate / naive_tp.rate
    if load >= 0.8:
        notes.append(
            f"the offered load is {load:.0%} of the naive relay's capacity "
            f"({naive_tp.rate:,.0f} events/s): its backlog, and so its latency, "
            + ("grow for as long as the run lasts" if load >= 1 else "stay high")
        )
    return notes


# -- entry point -------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--json", action="store_true", help="one JSON object per line per figure")
    add("--events", type=_positive(int), default=100_000, help="events for throughput")
    add("--naive-events", type=_positive(int), default=5_000, help="events for the naive run")
    add("--latency-seconds", type=_positive(float), default=10.0, help="measured seconds")
    add("--warmup-seconds", type=float, default=1.0, help="seconds written but not counted")
    add("--rate", type=_positive(float), default=1000.0, help="offered events/s (latency)")
    add("--naive-poll-ms", type=_positive(float), default=100.0, help="naive poll interval")
    add("--dsn", default=DEFAULT_DSN, help="PostgreSQL admin DSN (databases are created there)")
    return parser.parse_args(argv)


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")
    try:
        with bench_databases(args.dsn) as (source_url, log_url):
            # Latency first: the throughput runs leave dead rows for autovacuum to clean up.
            real_lat = reallatency(source_url, log_url, args)
            naive_lat = naivelatency(source_url, log_url, args)
            real_tp = real_throughput(source_url, log_url, args.events)
            naive_tp = naive_throughput(source_url, log_url, args.naive_events)
    except KeyboardInterrupt:
        print("interrupted; bench databases dropped", file=sys.stderr)
        return 130
    rows = figures(real_tp, naive_tp, real_lat, naive_lat)
    if args.json:
        for row in rows:
            print(orjson.dumps(row.as_json()).decode())
    else:
        print_table(rows, real_tp, naive_tp, real_lat, naive_lat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
