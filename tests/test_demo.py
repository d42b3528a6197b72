"""``readmodel demo``: the whole relay on embedded SQLite, no servers."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from outbox.db import create_engine
from tests.cli_helpers import run_cli


def _rows(database: Path, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def test_demo_relays_exactly_the_events_written(tmp_path: Path) -> None:
    directory = tmp_path / "demo"

    result = run_cli(["demo", "--dir", str(directory)])

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "sources" in out and "undelivered" in out and "log head" in out
    status = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if (cells := [c.strip() for c in line.strip("│┃ ").split("│")])[0] in {"orders", "auth"}
    }
    assert status == {"orders": ["0", "4750", "0"], "auth": ["0", "250", "0"]}
    assert "last events in the log (orders)" in out

    store = directory / "readstore.db"
    orders = _rows(directory / "orders.db", "SELECT id, user_id, total_cents FROM orders")
    users = _rows(directory / "auth.db", "SELECT id, email FROM users")
    assert (len(orders), len(users)) == (4750, 250)
    # Every state change wrote exactly one event, and the outboxes are drained.
    assert _rows(directory / "orders.db", "SELECT count(*) FROM outbox") == [(0,)]
    assert _rows(directory / "auth.db", "SELECT count(*) FROM outbox") == [(0,)]

    heads = dict(_rows(store, "SELECT source, head FROM rm_log_heads"))
    assert heads == {"orders": 4750, "auth": 250}
    assert _rows(store, "SELECT count(*) FROM rm_parked") == [(0,)]
    for source, count in heads.items():
        positions = _rows(
            store, f"SELECT position FROM rm_event_log WHERE source = '{source}' ORDER BY position"
        )
        assert [p for (p,) in positions] == list(range(1, count + 1))
    assert _rows(store, "SELECT count(DISTINCT event_id) FROM rm_event_log") == [(5000,)]

    logged_orders = _rows(
        store,
        "SELECT aggregate_id, event_type, payload FROM rm_event_log WHERE source = 'orders'",
    )
    assert {event_type for _, event_type, _ in logged_orders} == {"OrderPlaced"}
    assert {(a, json.loads(str(p))["total_cents"]) for a, _, p in logged_orders} == {
        (order_id, total) for order_id, _, total in orders
    }
    logged_users = _rows(
        store, "SELECT aggregate_id, payload FROM rm_event_log WHERE source = 'auth'"
    )
    assert {(a, json.loads(str(p))["email"]) for a, p in logged_users} == set(users)


def test_demo_can_run_again_in_the_same_directory(tmp_path: Path) -> None:
    directory = tmp_path / "again"
    assert run_cli(["demo", "--dir", str(directory), "--events", "60"]).exit_code == 0

    result = run_cli(["demo", "--dir", str(directory), "--events", "40"])

    assert result.exit_code == 0, result.output
    store = directory / "readstore.db"
    assert dict(_rows(store, "SELECT source, head FROM rm_log_heads")) == {"orders": 38, "auth": 2}
    engine = create_engine(f"sqlite:///{directory / 'orders.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one() == 38
    finally:
        engine.dispose()
