"""``readmodel demo``: the pipeline on embedded defaults, with no servers at all.

Two SQLite "service databases" (orders, auth) write state and outbox rows in one
transaction each; the relay moves the rows into the SQLite event log; the
status table and a few logged events are printed.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from config import load_settings
from outbox.log import EventLog
from outbox.relay import SourceRelay
from outbox.sources import open_source
from outbox.status import source_statuses

_SERVICE_TABLES = {
    "orders": "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, "
    "status TEXT NOT NULL, total_cents INTEGER NOT NULL)",
    "auth": "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT NOT NULL, "
    "active INTEGER NOT NULL)",
}


def run_demo(directory: Path, events: int, console: Console) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.db*"):
        old.unlink()
    settings = load_settings(
        None,
        store={"url": f"sqlite:///{directory / 'readstore.db'}"},
        sources={
            name: {"url": f"sqlite:///{directory / (name + '.db')}"} for name in _SERVICE_TABLES
        },
    )
    log = EventLog(settings.store.url)
    log.create_tables()
    sources = {name: open_source(name, s) for name, s in settings.sources.items()}
    try:
        for name, source in sources.items():
            with source.engine.begin() as conn:
                conn.exec_driver_sql(_SERVICE_TABLES[name])
                for statement in source.ddl():
                    conn.exec_driver_sql(statement)
        written = _simulate(sources, events, console)
        _relay(sources, log, written, console)
        _report(settings, log, console)
    finally:
        for source in sources.values():
            source.close()
        log.close()
    return 0


def _simulate(sources: dict, events: int, console: Console) -> int:
    rng = random.Random(42)
    users = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(max(1, events // 20))]
    written = 0
    with _progress(console) as progress:
        task = progress.add_task("services write", total=events)
        with sources["auth"].engine.begin() as conn:
            for user in users:
                email = f"user{user[:8]}@example.com"
                conn.execute(
                    sa.text("INSERT OR IGNORE INTO users VALUES (:id, :email, 1)"),
                    {"id": user, "email": email},
                )
                _outbox(conn, "user", user, "UserRegistered", {"id": user, "email": email})
                written += 1
        progress.update(task, completed=written)
        orders = sources["orders"].engine
        while written < events:
            with orders.begin() as conn:
                for _ in range(min(50, events - written)):
                    order = str(uuid.UUID(int=rng.getrandbits(128)))
                    user = rng.choice(users)
                    total = rng.randint(500, 50_000)
                    conn.execute(
                        sa.text("INSERT INTO orders VALUES (:id, :user, 'placed', :total)"),
                        {"id": order, "user": user, "total": total},
                    )
                    payload = {"order_id": order, "user_id": user, "total_cents": total}
                    _outbox(conn, "order", order, "OrderPlaced", payload)
                    written += 1
            progress.update(task, completed=written)
    return written


def _outbox(conn: sa.Connection, agg_type: str, agg_id: str, kind: str, payload: dict) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES (:t, :a, :k, :p)"
        ),
        {"t": agg_type, "a": agg_id, "k": kind, "p": json.dumps(payload)},
    )


def _relay(sources: dict, log: EventLog, total: int, console: Console) -> None:
    with _progress(console) as progress:
        task = progress.add_task("relay -> event log", total=total)
        for source in sources.values():
            relay = SourceRelay(source, log)
            if not source.try_lead():
                console.print(f"{source.name}: another relay is active; skipped")
                continue
            while relay.step():
                progress.update(task, advance=0, completed=sum(log.heads().values()))
            progress.update(task, completed=sum(log.heads().values()))


def _report(settings, log: EventLog, console: Console) -> None:
    table = Table(title="sources")
    for column in ("source", "undelivered", "log head", "parked"):
        table.add_column(column)
    for row in source_statuses(settings, log):
        table.add_row(row.source, str(row.undelivered), str(row.log_head), str(row.parked))
    console.print(table)
    latest = Table(title="last events in the log (orders)")
    for column in ("position", "type", "aggregate", "payload"):
        latest.add_column(column)
    head = log.head("orders")
    for event in log.read("orders", after=max(0, head - 3)):
        latest.add_row(
            str(event.position), event.event_type, event.aggregate_id[:8], json.dumps(event.payload)
        )
    console.print(latest)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )
