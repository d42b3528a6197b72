"""``readmodel demo``: the reference shop end to end, with no servers at all by default.

SQLite files stand in for the auth, products and orders service databases and for the
read store; the broker and the query cache are in-process. The demo simulates a few
thousand business actions, runs the relay and the projection workers until every read
model has caught up (live progress), answers a few read-model queries, prints the status
table and verifies every read model against the services. With a config file the same
runs against its servers (PostgreSQL, MariaDB, Redis).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from config import Settings, load_settings
from outbox.status import source_statuses
from projections.reference import PROJECTION_MODULES
from projections.reference.simulate import Simulator
from workers.broker import make_broker
from workers.runtime import Runtime, build_runtime
from workers.worker import run_pipeline

CATCH_UP_DEADLINE = 600.0


_DATABASES = ("auth", "products", "orders", "readstore")
# SQLite's companions of a database, and readmodel's lock files beside it.
_COMPANIONS = ("", "-wal", "-shm", "-journal", ".relay.lock")


def embedded_settings(directory: Path) -> Settings:
    """The demo's settings: SQLite everywhere, in-process broker and cache, in fresh files
    (the demo's own: other files in ``directory`` are left alone)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in _DATABASES:
        for companion in _COMPANIONS:
            (directory / f"{name}.db{companion}").unlink(missing_ok=True)
        for lock in directory.glob(f"{name}.db.replay-*.lock"):
            lock.unlink()
    return load_settings(
        None,
        projections=PROJECTION_MODULES,
        store={"url": f"sqlite:///{directory / 'readstore.db'}"},
        sources={
            name: {"url": f"sqlite:///{directory / (name + '.db')}"}
            for name in ("auth", "products", "orders")
        },
        broker={"url": "memory://"},
        cache={"url": "memory://"},
        engine={"sweep_every": "1s"},
    )


def run_demo(
    console: Console,
    *,
    config: Path | None = None,
    directory: Path = Path("readmodel-demo"),
    users: int = 300,
    orders: int = 1000,
    seed: int | None = None,
) -> int:
    """Returns the exit code: 0 when every read model verified equal to the services."""
    from workers.cli_reference import print_report
    from workers.reference import run_verify

    if config is None:
        settings = embedded_settings(directory)
        seed = 42 if seed is None else seed
    else:
        settings = load_settings(config)
        seed = random.SystemRandom().randrange(1, 2**31) if seed is None else seed
    where = "embedded SQLite in " + str(directory) if config is None else str(config)
    console.print(f"[bold]readmodel demo[/]: the reference shop on {where}, seed {seed}")
    runtime = build_runtime(settings)
    try:
        written = _simulate(settings, console, users, orders, seed)
        _catch_up(runtime, console, written)
        _queries(settings, runtime, console)
        _status(runtime, console)
        report, behind = run_verify(settings)
        print_report(report, console=console)
        if behind:
            console.print(f"[yellow]warning:[/] {behind}")
        return 0 if report.ok else 1
    finally:
        runtime.close()


def _simulate(settings: Settings, console: Console, users: int, orders: int, seed: int) -> int:
    with _progress(console) as progress:
        task = progress.add_task("services write", total=None, detail="")

        def advance(done: int, total: int) -> None:
            if done % 25 == 0 or done == total:
                elapsed = progress.tasks[0].elapsed or 0
                rate = f"{done / elapsed:,.0f} actions/s" if elapsed else ""
                progress.update(task, completed=done, total=total, detail=rate)

        result = Simulator(settings, seed=seed, progress=advance).run(users, orders)
    console.print(
        f"simulated {result.total_actions} business actions, {result.total_events} events "
        f"in {result.seconds:.1f}s",
        highlight=False,
    )
    return result.total_events


def _catch_up(runtime: Runtime, console: Console, written: int) -> None:
    """Relay and workers in this process (``readmodel run``) until every outbox is empty and
    every projection lane has reached the log head."""
    engine = runtime.engine
    lanes = [(p, engine.lanes(p)) for p in engine.projections.values()]
    start_heads = sum(runtime.log.heads().values())
    broker = make_broker(runtime.settings.broker)
    stop = threading.Event()
    failure: list[BaseException] = []

    def pipeline() -> None:
        try:
            run_pipeline(runtime, broker, stop, threads=4)
        except BaseException as exc:  # reported below
            failure.append(exc)

    thread = threading.Thread(target=pipeline, name="demo-pipeline", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        with _progress(console) as progress:
            relayed = progress.add_task("relay -> event log", total=max(1, written), detail="")
            applied = progress.add_task("projections", total=1, detail="")
            while True:
                # Outboxes first: once they are empty, every event is in the heads read next.
                pending = sum(
                    s.undelivered or 0 for s in source_statuses(runtime.settings, runtime.log)
                )
                heads = runtime.log.heads()
                done = total = 0
                for projection, projection_lanes in lanes:
                    checkpoints = engine.store_of(projection).checkpoints(projection.name)
                    for lane in projection_lanes:
                        total += heads.get(lane.source, 0)
                        done += checkpoints.get((lane.source, lane.partition), 0)
                elapsed = max(1e-6, time.monotonic() - started)
                moved = sum(heads.values()) - start_heads
                progress.update(relayed, completed=moved, detail=f"{moved / elapsed:,.0f} ev/s")
                progress.update(applied, completed=done, total=max(1, total), detail="")
                if pending == 0 and done == total:
                    break
                if failure:
                    raise failure[0]
                if time.monotonic() - started > CATCH_UP_DEADLINE:
                    raise TimeoutError("the projections did not catch up within 10 minutes")
                time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=60)
        broker.close()
    console.print(f"caught up in {time.monotonic() - started:.1f}s", highlight=False)


def _queries(settings: Settings, runtime: Runtime, console: Console) -> None:
    """A few reads through the query API (cache-aside), as a service would make them."""
    from projections.query_service import open_queries

    store = runtime.engine.store_of("product_catalog")
    engine: sa.Engine = store.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        slug = conn.exec_driver_sql(
            "SELECT slug FROM product_catalog ORDER BY review_count DESC, product_id LIMIT 1"
        ).scalar()
        customer = conn.exec_driver_sql(
            "SELECT customer_id FROM customer_stats ORDER BY total_spent_cents DESC, "
            "customer_id LIMIT 1"
        ).scalar()
    queries = open_queries(settings)
    table = Table(title="read-model queries (no join across services at read time)")
    table.add_column("query")
    table.add_column("result")
    try:
        product = queries.run("product_catalog", "by_slug", slug).value
        queries.run("product_catalog", "by_slug", slug)  # the second read is a cache hit
        orders = queries.run("order_summary", "by_customer", customer, 3).value
        shown = {
            f"product_catalog.by_slug({slug!r})": _pick(
                product, "name", "price_cents", "stock", "review_count", "average_rating"
            ),
            f"user_directory.by_id({customer[:8]}…)": _pick(
                queries.run("user_directory", "by_id", customer).value, "email", "name", "active"
            ),
            f"customer_stats.by_customer({customer[:8]}…)": _pick(
                queries.run("customer_stats", "by_customer", customer).value,
                "orders_count",
                "cancelled_count",
                "total_spent_cents",
            ),
        }
        for order in orders[:2]:
            row = queries.run("order_summary", "by_id", order["order_id"]).value or {}
            shown[f"order_summary.by_id({order['order_id'][:8]}…)"] = {
                **_pick(row, "order_number", "customer_email", "status", "total_cents"),
                "lines": [f"{li['quantity']} x {li['title']}" for li in row.get("lines", [])],
            }
    finally:
        queries.close()
    for name, value in shown.items():
        table.add_row(name, orjson.dumps(value).decode())
    console.print(table)


def _pick(row: dict[str, Any] | None, *names: str) -> dict[str, Any]:
    return {} if row is None else {name: row.get(name) for name in names}


def _status(runtime: Runtime, console: Console) -> None:
    from workers.cli_ops import status_tables
    from workers.status import collect

    console.print(status_tables(collect(runtime)))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    )
