"""Pipeline benchmark: PostgreSQL outbox -> Redis -> PostgreSQL read model, beside a naive one.

Usage: ``.venv/bin/python bench/pipeline.py [--json] [--events N] [--rss-events N]
[--latency-seconds S]``.

readmodel's pipeline runs as it does in production: a ``readmodel relay`` process and
``--worker-processes`` ``readmodel work`` processes (``--worker-threads`` threads each) on
a Redis broker (a queue of the bench's own), relaying one outbox table (source ``shop``)
into the event log and projecting it with :class:`bench.pipeline_projection.OrderView`, a
three-table denormalizing projection (customers with order counters, products, and an
order view holding the customer's and the product's fields). The naive pipeline runs in
the same invocation on the same servers: a poller thread in this process reads 100
pending outbox rows at a time and, per row, sends one Dramatiq message carrying the event
and marks the row dispatched; a worker process (``--naive-threads`` threads) applies each
event in its own transaction with plain SQL (:func:`bench.pipeline_projection.naive_apply`).
Every phase gets throw-away databases (service database and read store) and queues, which
are dropped on exit, Ctrl-C and SIGTERM included.

``pipeline_throughput`` (events/s)
    Both processes are started and ready (relay leading the source, worker consuming)
    before the outbox receives ``--events`` events in one COPY transaction (customers,
    products, then orders). The clock runs from that commit until every lane of the
    projection has checkpointed the log head (its read-model writes commit with the
    checkpoint), after which the read model is checked (one view row per order, order
    counters exact). The naive pipeline gets ``--naive-events`` events the same way and is
    timed until its tables hold all of them.

``pipeline_latency_p50`` / ``pipeline_latency_p99`` (ms)
    A writer process commits orders at a steady ``--rate`` events/s, one per transaction,
    and records ``time.time()`` after each commit. A trigger on the read store's checkpoint
    table (added by the bench to its throw-away database) NOTIFYs every checkpoint move; a
    watcher LISTENs and records when each lane's checkpoint advanced (NOTIFY is delivered
    after the commit, and the read model and the checkpoint commit together): an event is
    visible from the first notice at which its lane's checkpoint reached its log position.
    (Polling the checkpoints every millisecond instead would cost the saturated machine
    a thousand queries a second.) The naive pipeline is watched by polling its order view.
    Events committed in the first ``--warmup-seconds`` are not counted.

``worker_rss_growth`` (MB)
    ``--rss-events`` events (default 1,000,000) go through the real pipeline as for
    throughput; the worker processes' resident set (``VmRSS`` from ``/proc``, summed over
    processes) is read once every lane has passed position 100,000 and again at the end.
    The figure is the difference; no baseline.

Each figure is printed beside the naive one with ``ratio = value / baseline``; with
``--json``, one JSON object per line per figure.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
import sqlalchemy as sa

from bench.common import Figure, Latency, latency, print_figures
from bench.pipeline_projection import (
    NAIVE_TABLES,
    PARTITIONS_VARIABLE,
    SOURCE,
    OrderView,
    naive_apply,
)
from config import SourceSettings
from outbox.db import libpq_conninfo
from outbox.envelope import aggregate_hash
from outbox.postgres import postgres_ddl
from workers.logs import configure_logging

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
OUTBOX = "outbox"
NAIVE_OUTBOX = "naive_outbox"
PROJECTION = OrderView.name
THROUGHPUT_TARGET = 20_000.0
THROUGHPUT_RATIO_TARGET = 10.0
P99_TARGET_MS = 50.0
RSS_GROWTH_TARGET_MB = 10.0
RSS_FIRST_SAMPLE = 100_000
NAIVE_ACTOR = "bench_naive_apply"
CHECKPOINT_CHANNEL = "bench_checkpoints"
CHECKPOINT_NOTIFY = f"""
CREATE FUNCTION bench_checkpoint_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.projection = '{PROJECTION}' THEN
    PERFORM pg_notify('{CHECKPOINT_CHANNEL}', NEW.partition || ':' || NEW.position);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER bench_checkpoint_notify AFTER INSERT OR UPDATE ON rm_checkpoints
FOR EACH ROW EXECUTE FUNCTION bench_checkpoint_notify();
"""


# -- databases, queues, processes --------------------------------------------------------


class Resources:
    """Everything a run creates on the servers or starts, removed by :meth:`release`."""

    def __init__(self, admin_dsn: str, redis_url: str) -> None:
        self.admin_dsn = admin_dsn
        self.redis_url = redis_url
        self.prefix = f"rm_bench_{uuid.uuid4().hex[:10]}"
        self.databases: list[str] = []
        self.queues: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="rm_bench_pipeline_"))
        self._count = 0

    def database(self, suffix: str) -> str:
        """Create ``<prefix>_<suffix>`` and return its DSN."""
        name = f"{self.prefix}_{suffix}"
        with psycopg.connect(libpq_conninfo(self.admin_dsn), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return sa.make_url(self.admin_dsn).set(database=name).render_as_string(False)

    def queue(self) -> str:
        self._count += 1
        name = f"{self.prefix}_q{self._count}"
        self.queues.append(name)
        return name

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        """Start ``command`` in its own session (Ctrl-C reaches only this process, which stops
        it); its output goes to ``<tmp>/<name>.log``."""
        with open(self.tmp / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        self.processes.append(process)
        return process

    def log_text(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_processes(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    def end_phase(self) -> None:
        """Stop the phase's processes and drop its databases and queues, so that no later
        phase shares the server with them (autovacuum of a finished phase's 200,000-row
        tables would otherwise run during the latency phase)."""
        try:
            self.stop_processes()
        finally:
            try:
                self._drop_queues()
            finally:
                self._drop_databases()

    def release(self) -> None:
        try:
            self.end_phase()
        finally:
            for path in self.tmp.iterdir():
                path.unlink()
            self.tmp.rmdir()

    def _drop_databases(self) -> None:
        with psycopg.connect(libpq_conninfo(self.admin_dsn), autocommit=True) as conn:
            for name in reversed(self.databases):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.databases.clear()

    def _drop_queues(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            for queue in self.queues:
                # Each run's brokers use its queue name as their key namespace.
                keys = list(client.scan_iter(match=f"{queue}:*", count=1000))
                if keys:
                    client.delete(*keys)
        finally:
            client.close()
        self.queues.clear()


@contextlib.contextmanager
def bench_resources(admin_dsn: str, redis_url: str) -> Iterator[Resources]:
    """:class:`Resources`, released on exit (Ctrl-C and SIGTERM too)."""
    resources = Resources(admin_dsn, redis_url)
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield resources
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            resources.release()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)


def _raise_keyboard_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


def rss_mb(pid: int) -> float:
    """The resident set of process ``pid`` in MB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mix:
    """How ``events`` bench events split into customers, products and orders."""

    events: int
    customers: int
    products: int

    @classmethod
    def of(cls, events: int) -> Mix:
        customers = min(2_000, max(1, events // 20))
        products = min(500, max(1, events // 50))
        return cls(events, customers, products)

    @property
    def orders(self) -> int:
        return self.events - self.customers - self.products


def event_rows(mix: Mix, first_order: int = 0) -> Iterator[tuple[str, str, str, str]]:
    """``(aggregatetype, aggregateid, type, payload)``: customers, products, then orders."""
    dumps = orjson.dumps
    for c in range(mix.customers):
        payload = {"customer_id": f"c{c}", "name": f"Customer {c}", "email": f"c{c}@example.com"}
        yield "customer", f"c{c}", "CustomerRegistered", dumps(payload).decode()
    for p in range(mix.products):
        payload = {"product_id": f"p{p}", "title": f"Product {p}", "price": 100 + p}
        yield "product", f"p{p}", "ProductCreated", dumps(payload).decode()
    for i in range(first_order, first_order + mix.orders):
        yield order_row(i, mix)


def order_row(i: int, mix: Mix) -> tuple[str, str, str, str]:
    payload = {
        "order_id": f"o{i}",
        "customer_id": f"c{(i * 7) % mix.customers}",
        "product_id": f"p{(i * 13) % mix.products}",
        "quantity": 1 + i % 3,
    }
    return "order", f"o{i}", "OrderPlaced", orjson.dumps(payload).decode()


def create_outbox(source_url: str, table: str) -> SourceSettings:
    settings = SourceSettings(url=source_url, table=table, on_dispatch="delete")
    with psycopg.connect(libpq_conninfo(source_url), autocommit=True) as conn:
        for statement in postgres_ddl(settings):
            conn.execute(statement)
    return settings


def copy_events(source_url: str, table: str, rows: Iterator[tuple[str, str, str, str]]) -> float:
    """COPY ``rows`` into ``table`` in one transaction; returns ``time.time()`` at commit."""
    columns = "aggregatetype, aggregateid, type, payload"
    with psycopg.connect(libpq_conninfo(source_url)) as conn:
        with conn.cursor().copy(f'COPY "{table}" ({columns}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return time.time()


# -- readmodel's pipeline ----------------------------------------------------------------


def _toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []

    def value(v: Any) -> str:
        return orjson.dumps(v).decode()

    def walk(prefix: str, node: dict[str, Any]) -> None:
        scalars = {k: v for k, v in node.items() if not isinstance(v, dict)}
        if prefix:
            tables.append((prefix, scalars))
        else:
            lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in node.items():
            if isinstance(v, dict):
                walk(f"{prefix}.{k}" if prefix else k, v)

    walk("", data)
    for name, scalars in tables:
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
    return "\n".join(lines) + "\n"


class RealPipeline:
    """``readmodel relay`` and ``readmodel work`` processes on fresh databases and a queue."""

    def __init__(self, resources: Resources, args: argparse.Namespace, name: str) -> None:
        self.resources = resources
        self.args = args
        self.name = name
        self.source_url = resources.database(f"{name}_src")
        self.store_url = resources.database(f"{name}_rm")
        create_outbox(self.source_url, OUTBOX)
        self.config = resources.tmp / f"{name}.toml"
        queue = resources.queue()
        settings = {
            "projections": ["bench.pipeline_projection:OrderView"],
            "store": {"url": self.store_url},
            "broker": {"url": args.redis, "queue": queue, "namespace": queue},
            "logging": {"level": "info"},
            "sources": {SOURCE: {"url": self.source_url, "table": OUTBOX}},
        }
        self.config.write_text(_toml(settings))
        self.store = psycopg.connect(libpq_conninfo(self.store_url), autocommit=True)
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Start the workers, then the relay; return once all are ready."""
        cli = [sys.executable, "-m", "workers.cli"]
        config = ["--config", str(self.config)]
        subprocess.run([*cli, "migrate", *config], check=True, capture_output=True)
        for n in range(self.args.worker_processes):
            log = f"{self.name}-worker{n}"
            threads = ["-p", "1", "-t", str(self.args.worker_threads)]
            self.workers.append(self.resources.start(log, [*cli, "work", *config, *threads]))
            wait_for(lambda log=log: self._logged(log, "worker started"), 60, "a worker")
        self.resources.start(f"{self.name}-relay", [*cli, "relay", *config])
        wait_for(lambda: self._logged(f"{self.name}-relay", "leading source"), 60, "the relay")

    def _logged(self, name: str, text: str) -> bool:
        for process in self.resources.processes:
            if process.poll() is not None:
                raise RuntimeError(f"a bench process exited:\n{self.resources.log_text(name)}")
        return text in self.resources.log_text(name)

    def checkpoints(self) -> dict[int, int]:
        rows = self.store.execute(
            "SELECT partition, position FROM rm_checkpoints WHERE projection = %s",
            (PROJECTION,),
        ).fetchall()
        return {int(p): int(pos) for p, pos in rows}

    def head(self) -> int:
        row = self.store.execute(
            "SELECT head FROM rm_log_heads WHERE source = %s", (SOURCE,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def low_checkpoint(self) -> int:
        """The lowest checkpoint over all lanes (0 while a lane has none)."""
        done = self.checkpoints()
        if len(done) < self.args.partitions:
            return 0
        return min(done.values())

    def rss(self) -> float:
        return sum(rss_mb(process.pid) for process in self.workers)

    def check(self, mix: Mix) -> None:
        """The read model holds every event exactly once."""
        orders, named = self.store.execute(
            "SELECT (SELECT count(*) FROM bench_order_view), "
            "(SELECT count(*) FROM bench_order_view WHERE customer_name IS NOT NULL)"
        ).fetchone() or (0, 0)
        counted, registered, products = self.store.execute(
            "SELECT sum(orders), count(*) FILTER (WHERE name IS NOT NULL), "
            "(SELECT count(*) FROM bench_products) FROM bench_customers"
        ).fetchone() or (0, 0, 0)
        parked = self.store.execute("SELECT count(*) FROM rm_parked_events").fetchone()
        got = (orders, counted, registered, products, parked[0] if parked else 0)
        want = (mix.orders, mix.orders, mix.customers, mix.products, 0)
        if got != want:
            raise RuntimeError(
                f"{self.name}: read model is wrong: (orders, counted, customers, products, "
                f"parked) = {got}, expected {want}"
            )
        if named != orders:
            print(
                f"note: {orders - named} orders were applied before their customer",
                file=sys.stderr,
            )

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True, slots=True)
class Throughput:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass(slots=True)
class RssRun:
    throughput: Throughput
    rss_first: float
    rss_last: float
    samples: list[tuple[int, float]] = field(default_factory=list)

    @property
    def growth(self) -> float:
        return self.rss_last - self.rss_first


def real_throughput(
    resources: Resources, args: argparse.Namespace, events: int, name: str
) -> RssRun:
    """Preload ``events`` events in one commit, time until every lane checkpointed them all;
    sample the workers' RSS once every lane passed position 100,000 and at the end."""
    mix = Mix.of(events)
    pipeline = RealPipeline(resources, args, name)
    try:
        pipeline.start()
        committed = copy_events(pipeline.source_url, OUTBOX, event_rows(mix))
        started = time.perf_counter() - (time.time() - committed)
        rss_first: float | None = None
        samples: list[tuple[int, float]] = []
        while True:
            low = pipeline.low_checkpoint()
            if low >= events:
                elapsed = time.perf_counter() - started
                break
            if rss_first is None and low >= min(RSS_FIRST_SAMPLE, events):
                rss_first = pipeline.rss()
            if len(samples) < low // RSS_FIRST_SAMPLE:
                samples.append((low, pipeline.rss()))
            time.sleep(0.01)
        rss_last = pipeline.rss()
        pipeline.check(mix)
        return RssRun(
            Throughput(events, elapsed),
            rss_last if rss_first is None else rss_first,
            rss_last,
            samples,
        )
    finally:
        pipeline.close()
        resources.end_phase()


# -- the naive pipeline ------------------------------------------------------------------


class NaivePipeline:
    """A poller thread here and a Dramatiq worker process applying one event per message."""

    def __init__(self, resources: Resources, args: argparse.Namespace, name: str) -> None:
        self.resources = resources
        self.args = args
        self.name = name
        self.source_url = resources.database(f"{name}_src")
        self.store_url = resources.database(f"{name}_rm")
        self.queue = resources.queue()
        create_outbox(self.source_url, NAIVE_OUTBOX)
        engine = sa.create_engine(self.store_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.begin() as conn:
                for table in NAIVE_TABLES:
                    table.create(conn)
        finally:
            engine.dispose()
        self.store = psycopg.connect(libpq_conninfo(self.store_url), autocommit=True)
        self.stop = threading.Event()
        self.poller: threading.Thread | None = None
        self.failure: BaseException | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "bench.pipeline", "--naive-worker"]
        command += ["--redis", self.args.redis, "--queue", self.queue, "--store", self.store_url]
        command += ["--naive-threads", str(self.args.naive_threads)]
        name = f"{self.name}-worker"
        self.resources.start(name, command)
        wait_for(lambda: "naive worker started" in self.resources.log_text(name), 60, "naive")
        self.poller = threading.Thread(target=self._poll, name="naive-poller", daemon=True)
        self.poller.start()

    def _poll(self) -> None:
        """Read 100 pending rows, send one message per row and mark it, row by row."""
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=self.args.redis, namespace=self.queue)
        apply = dramatiq.actor(
            _naive_stub, actor_name=NAIVE_ACTOR, queue_name=self.queue, broker=broker
        )
        try:
            with psycopg.connect(libpq_conninfo(self.source_url), autocommit=True) as conn:
                while not self.stop.is_set():
                    rows = conn.execute(
                        "SELECT seq, type, payload FROM naive_outbox "
                        "WHERE dispatched_at IS NULL ORDER BY seq LIMIT 100"
                    ).fetchall()
                    for seq, kind, payload in rows:
                        apply.send(kind, payload, seq)
                        conn.execute(
                            "UPDATE naive_outbox SET dispatched_at = now() WHERE seq = %s", (seq,)
                        )
                    if len(rows) < 100:
                        self.stop.wait(self.args.naive_poll_ms / 1000)
        except BaseException as exc:
            self.failure = exc
        finally:
            broker.close()

    def applied(self) -> int:
        row = self.store.execute(
            "SELECT (SELECT count(*) FROM naive_order_view) + "
            "(SELECT count(*) FROM naive_customers WHERE name IS NOT NULL) + "
            "(SELECT count(*) FROM naive_products)"
        ).fetchone()
        if self.failure is not None:
            raise RuntimeError(f"the naive poller failed: {self.failure!r}")
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.stop.set()
        if self.poller is not None:
            self.poller.join(timeout=30)
        self.store.close()


def _naive_stub(event_type: str, payload: dict[str, Any], position: int) -> None:
    """The naive actor's signature on the sending side (the worker process runs it)."""


def naive_worker(args: argparse.Namespace) -> int:
    """``--naive-worker``: consume ``--queue``, one transaction per event, until SIGTERM."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=args.redis, namespace=args.queue)
    local = threading.local()

    def apply(event_type: str, payload: dict[str, Any], position: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(libpq_conninfo(args.store))
        with conn.transaction():
            naive_apply(conn, event_type, payload, position)

    dramatiq.actor(apply, actor_name=NAIVE_ACTOR, queue_name=args.queue, broker=broker)
    worker = dramatiq.Worker(broker, worker_threads=args.naive_threads, worker_timeout=10)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.start()
    print("naive worker started", flush=True)
    stop.wait()
    worker.stop(timeout=10_000)
    broker.close()
    return 0


def naive_throughput(resources: Resources, args: argparse.Namespace) -> Throughput:
    mix = Mix.of(args.naive_events)
    pipeline = NaivePipeline(resources, args, "naive_tp")
    try:
        pipeline.start()
        committed = copy_events(pipeline.source_url, NAIVE_OUTBOX, event_rows(mix))
        started = time.perf_counter() - (time.time() - committed)
        wait_for(lambda: pipeline.applied() >= mix.events, 3600, "the naive pipeline", 0.05)
        return Throughput(mix.events, time.perf_counter() - started)
    finally:
        pipeline.close()
        resources.end_phase()


# -- latency -----------------------------------------------------------------------------


def write_steadily(
    source_url: str, table: str, rate: float, seconds: float, first: int, mix: Mix
) -> list[tuple[str, float]]:
    """Commit orders ``first, first+1, ...`` at ``rate`` per second for ``seconds``; each
    transaction holds the orders due by then (normally one). Returns ``(order id, commit
    time)`` per order, the time taken with ``time.time()`` right after COMMIT returned."""
    total = int(rate * seconds)
    rows = [order_row(first + i, mix) for i in range(total)]
    statement = (
        f'INSERT INTO "{table}" (aggregatetype, aggregateid, type, payload) VALUES (%s, %s, %s, %s)'
    )
    committed: list[tuple[str, float]] = []
    with psycopg.connect(libpq_conninfo(source_url)) as conn, conn.cursor() as cursor:
        start = time.time()
        sent = 0
        while sent < total:
            due = min(total, int((time.time() - start) * rate) + 1)
            if due <= sent:
                delay = start + sent / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                continue
            cursor.executemany(statement, rows[sent:due])
            conn.commit()
            now = time.time()
            committed.extend((rows[i][1], now) for i in range(sent, due))
            sent = due
    return committed


def _writer_child(args: tuple[Any, ...], results: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this process
    try:
        results.put((write_steadily(*args), None))
    except BaseException as exc:
        results.put((None, f"{type(exc).__name__}: {exc}"))
        results.close()
        results.join_thread()
        sys.exit(1)


class WriterProcess:
    """:func:`write_steadily` in a process of its own, started at once.

    Its result (a commit time per order) is taken only with :meth:`result`: receiving and
    unpickling it holds this process's GIL for a while, which must not happen while the
    watcher thread is still timing events."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        context = multiprocessing.get_context("spawn")
        self._results = context.Queue()
        self._process = context.Process(
            target=_writer_child, args=(args, self._results), daemon=True
        )
        self._process.start()

    def failed(self) -> bool:
        """Whether the writer stopped on an error (:meth:`result` then raises it)."""
        return self._process.exitcode not in (None, 0)

    def result(self, timeout: float) -> list[tuple[str, float]]:
        try:
            committed, error = self._results.get(timeout=timeout)
        finally:
            if self._process.is_alive():
                self._process.terminate()
            self._process.join()
        if error is not None:
            raise RuntimeError(f"the bench writer failed: {error}")
        return committed


def run_writer(args: tuple[Any, ...], timeout: float) -> list[tuple[str, float]]:
    """Run :func:`write_steadily` in a process of its own; returns its result."""
    return WriterProcess(args).result(timeout)


def reallatency(resources: Resources, args: argparse.Namespace) -> Latency:
    """Offer ``--rate`` orders/s; an event is visible once its lane's checkpoint passed it."""
    mix = Mix.of(10_000)
    pipeline = RealPipeline(resources, args, "lat")
    stop = threading.Event()
    advances: dict[int, list[tuple[int, float]]] = {}

    listening = threading.Event()

    def watch() -> None:
        with psycopg.connect(libpq_conninfo(pipeline.store_url), autocommit=True) as conn:
            conn.execute(f"LISTEN {CHECKPOINT_CHANNEL}")
            listening.set()
            last: dict[int, int] = {}
            while not stop.is_set():
                for note in conn.notifies(timeout=0.1):
                    now = time.time()
                    partition, position = map(int, note.payload.split(":"))
                    if position > last.get(partition, -1):
                        last[partition] = position
                        advances.setdefault(partition, []).append((position, now))

    watcher = threading.Thread(target=watch, name="bench-watcher", daemon=True)
    try:
        pipeline.start()
        pipeline.store.execute(CHECKPOINT_NOTIFY)
        lookups = Mix(mix.customers + mix.products, mix.customers, mix.products)
        copy_events(pipeline.source_url, OUTBOX, event_rows(lookups))
        wait_for(lambda: pipeline.low_checkpoint() >= lookups.events, 60, "the lookups")
        watcher.start()
        if not listening.wait(10):
            raise RuntimeError("the bench watcher could not LISTEN")
        seconds = args.warmup_seconds + args.latency_seconds
        write_args = (pipeline.source_url, OUTBOX, args.rate, seconds, 0, mix)
        writer = WriterProcess(write_args)
        expected = lookups.events + int(args.rate * seconds)  # what write_steadily writes
        wait_for(
            lambda: writer.failed() or pipeline.low_checkpoint() >= expected,
            seconds + 120,
            "the last events",
            0.01,
        )
        time.sleep(0.01)
        stop.set()
        committed = writer.result(120)
        watcher.join(timeout=10)
        positions = dict(
            pipeline.store.execute(
                "SELECT aggregate_id, position FROM rm_event_log WHERE source = %s "
                "AND aggregate_type = 'order'",
                (SOURCE,),
            ).fetchall()
        )
    finally:
        stop.set()
        pipeline.close()
        resources.end_phase()
    seen: dict[str, float] = {}
    marks = {p: ([pos for pos, _ in rows], [t for _, t in rows]) for p, rows in advances.items()}
    for order_id, position in positions.items():
        partition = aggregate_hash("order", order_id) % args.partitions
        cuts, times = marks.get(partition, ([], []))
        index = bisect.bisect_left(cuts, position)
        if index < len(cuts):
            seen[order_id] = times[index]
    return latency(committed, seen, args.warmup_seconds)


def naivelatency(resources: Resources, args: argparse.Namespace) -> Latency:
    """Offer ``--rate`` orders/s to the naive pipeline; watch its order view."""
    mix = Mix.of(10_000)
    pipeline = NaivePipeline(resources, args, "naive_lat")
    stop = threading.Event()
    seen: dict[str, float] = {}

    def watch(low: int) -> None:
        """``low``: every position up to it was seen (the order view holds outbox seqs)."""
        above: set[int] = set()
        with psycopg.connect(libpq_conninfo(pipeline.store_url), autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute(
                    "SELECT order_id, position FROM naive_order_view WHERE position > %s",
                    (low,),
                ).fetchall()
                now = time.time()
                for order_id, position in rows:
                    if order_id not in seen:
                        seen[order_id] = now
                        above.add(position)
                while low + 1 in above:
                    low += 1
                    above.discard(low)
                time.sleep(0.001)

    lookups = Mix(mix.customers + mix.products, mix.customers, mix.products)
    watcher = threading.Thread(
        target=watch, args=(lookups.events,), name="bench-naive-watcher", daemon=True
    )
    try:
        pipeline.start()
        copy_events(pipeline.source_url, NAIVE_OUTBOX, event_rows(lookups))
        wait_for(lambda: pipeline.applied() >= lookups.events, 300, "the naive lookups", 0.05)
        watcher.start()
        seconds = args.warmup_seconds + args.latency_seconds
        write_args = (pipeline.source_url, NAIVE_OUTBOX, args.rate, seconds, 0, mix)
        committed = run_writer(write_args, seconds + 120)
        patience = time.monotonic() + args.naive_patience
        while len(seen) < len(committed) and time.monotonic() < patience:
            time.sleep(0.05)
    finally:
        stop.set()
        watcher.join(timeout=10)
        pipeline.close()
        resources.end_phase()
    return latency(committed, dict(seen), args.warmup_seconds)


# -- report ------------------------------------------------------------------------------


@dataclass(slots=True)
class Results:
    real_tp: Throughput
    naive_tp: Throughput
    real_lat: Latency
    naive_lat: Latency
    rss: RssRun


def figures(r: Results) -> list[Figure]:
    rate = r.real_tp.rate
    return [
        Figure(
            "pipeline",
            "pipeline_throughput",
            rate,
            "events/s",
            r.naive_tp.rate,
            f">= {THROUGHPUT_TARGET:,.0f} and >= {THROUGHPUT_RATIO_TARGET:.0f}x naive",
            rate >= THROUGHPUT_TARGET and rate >= THROUGHPUT_RATIO_TARGET * r.naive_tp.rate,
        ),
        Figure(
            "pipeline",
            "pipeline_latency_p50",
            r.real_lat.p50_ms,
            "ms",
            r.naive_lat.p50_ms,
            "",
            None,
        ),
        Figure(
            "pipeline",
            "pipeline_latency_p99",
            r.real_lat.p99_ms,
            "ms",
            r.naive_lat.p99_ms,
            f"<= {P99_TARGET_MS:.0f} ms",
            r.real_lat.p99_ms <= P99_TARGET_MS,
        ),
        Figure(
            "pipeline",
            "worker_rss_growth",
            r.rss.growth,
            "MB",
            None,
            f"<= {RSS_GROWTH_TARGET_MB:.0f} MB",
            r.rss.growth <= RSS_GROWTH_TARGET_MB,
        ),
    ]


def print_table(rows: list[Figure], r: Results, args: argparse.Namespace) -> None:
    console = print_figures(
        "pipeline: PostgreSQL outbox -> Redis -> PostgreSQL read model (3 tables)",
        ("readmodel", "naive"),
        rows,
    )
    rss = r.rss
    notes = [
        f"throughput: readmodel {r.real_tp.events:,} events in {r.real_tp.seconds:.2f} s "
        f"({args.worker_processes} worker process(es) x {args.worker_threads} threads, one "
        f"relay); naive {r.naive_tp.events:,} in {r.naive_tp.seconds:.2f} s (1 x "
        f"{args.naive_threads} threads)",
        f"latency: commit -> visible in the read model at {r.real_lat.offered_rate:,.0f} / "
        f"{r.naive_lat.offered_rate:,.0f} events/s offered; {r.real_lat.samples:,} / "
        f"{r.naive_lat.samples:,} counted, {r.real_lat.missing} / {r.naive_lat.missing} never "
        "seen (readmodel / naive)",
        f"worker RSS: {rss.rss_first:.1f} MB at {min(RSS_FIRST_SAMPLE, rss.throughput.events):,}"
        f" events, {rss.rss_last:.1f} MB at {rss.throughput.events:,} "
        f"({rss.throughput.rate:,.0f} events/s over that run)",
    ]
    if r.naive_tp.rate < r.naive_lat.offered_rate:
        notes.append(
            f"the naive pipeline's capacity ({r.naive_tp.rate:,.0f} events/s) is below the "
            "offered load, so its backlog, and its latency, grow for as long as the run lasts"
        )
    for line in notes:
        console.print(line, highlight=False)


# -- entry point -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--json", action="store_true", help="one JSON object per line per figure")
    add("--events", type=int, default=200_000, help="events for throughput")
    add("--rss-events", type=int, default=1_000_000, help="events for the RSS run")
    add("--naive-events", type=int, default=5_000, help="events for the naive throughput")
    add("--latency-seconds", type=float, default=10.0, help="measured seconds")
    add("--warmup-seconds", type=float, default=1.0, help="latency: not counted")
    add("--rate", type=float, default=1000.0, help="offered events/s (latency)")
    add("--worker-processes", type=int, default=1, help="readmodel work processes")
    add("--worker-threads", type=int, default=4, help="threads per worker process")
    add("--partitions", type=int, default=OrderView.partitions, help="lanes of the projection")
    add("--naive-threads", type=int, default=8, help="naive worker threads")
    add("--naive-poll-ms", type=float, default=100.0, help="naive poll interval when idle")
    add("--naive-patience", type=float, default=30.0, help="latency: wait for the naive tail")
    add("--dsn", default=DEFAULT_DSN, help="PostgreSQL admin DSN")
    add("--redis", default=DEFAULT_REDIS, help="Redis URL for the brokers")
    add("--only", choices=["throughput", "latency", "rss", "naive"], help=argparse.SUPPRESS)
    add("--naive-worker", action="store_true", help=argparse.SUPPRESS)
    add("--queue", help=argparse.SUPPRESS)
    add("--store", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.naive_worker:
        return naive_worker(args)
    configure_logging("warning")
    os.environ[PARTITIONS_VARIABLE] = str(args.partitions)  # read by the worker processes
    try:
        with bench_resources(args.dsn, args.redis) as resources:
            if args.only:
                return _only(resources, args)
            real_tp = real_throughput(resources, args, args.events, "tp").throughput
            naive_tp = naive_throughput(resources, args)
            real_lat = reallatency(resources, args)
            naive_lat = naivelatency(resources, args)
            rss = real_throughput(resources, args, args.rss_events, "rss")
    except KeyboardInterrupt:
        print("interrupted; bench databases, queues and processes removed", file=sys.stderr)
        return 130
    results = Results(real_tp, naive_tp, real_lat, naive_lat, rss)
    rows = figures(results)
    if args.json:
        for row in rows:
            print(orjson.dumps(row.as_json()).decode())
    else:
        print_table(rows, results, args)
    return 0


def _only(resources: Resources, args: argparse.Namespace) -> int:
    """Development aid: one real-pipeline phase, printed plainly."""
    if args.only == "throughput":
        run = real_throughput(resources, args, args.events, "tp")
        print(f"throughput {run.throughput.rate:,.0f} events/s ({run.throughput.seconds:.2f} s)")
    elif args.only == "latency":
        lat = reallatency(resources, args)
        print(f"latency p50 {lat.p50_ms:.1f} ms p99 {lat.p99_ms:.1f} ms ({lat.samples} counted)")
    elif args.only == "naive":
        tp = naive_throughput(resources, args)
        print(f"naive throughput {tp.rate:,.0f} events/s")
        lat = naivelatency(resources, args)
        print(f"naive latency p50 {lat.p50_ms:.1f} ms p99 {lat.p99_ms:.1f} ms ({lat.samples})")
    else:
        run = real_throughput(resources, args, args.rss_events, "rss")
        print(f"rss {run.rss_first:.1f} -> {run.rss_last:.1f} MB; samples {run.samples}")
        print(f"throughput {run.throughput.rate:,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
