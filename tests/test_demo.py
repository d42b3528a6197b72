"""``readmodel demo``: the reference shop end to end on embedded SQLite, no servers."""

from __future__ import annotations

from pathlib import Path

from outbox.db import create_engine
from tests.cli_helpers import run_cli


def _rows(database: Path, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def _table_rows(out: str, first: set[str]) -> dict[str, list[str]]:
    """Rows of the rich tables in ``out`` whose first cell is in ``first``."""
    return {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if (cells := [c.strip() for c in line.strip("│┃ ").split("│")])[0] in first
    }


def test_demo_simulates_projects_queries_and_verifies(tmp_path: Path) -> None:
    directory = tmp_path / "demo"

    result = run_cli(["demo", "--dir", str(directory), "--users", "60", "--orders", "200"])

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "caught up in" in out
    assert "read-model queries" in out and "product_catalog.by_slug(" in out
    assert "order_summary.by_id(" in out and "customer_stats.by_customer(" in out
    services = {name: directory / f"{name}.db" for name in ("auth", "products", "orders")}
    store = directory / "readstore.db"

    # the status table: every outbox drained, every event in the log, nothing parked
    heads = dict(_rows(store, "SELECT source, head FROM rm_log_heads"))
    status = _table_rows(out, set(services))
    assert {name: cells[1:] for name, cells in status.items()} == {
        name: ["0", "-", str(heads[name]), "0"] for name in services
    }
    for database in services.values():
        assert _rows(database, "SELECT count(*) FROM outbox") == [(0,)]

    # verify ran and found every read model equal to the services
    users = _rows(services["auth"], "SELECT count(*) FROM users")[0][0]
    orders = _rows(services["orders"], "SELECT count(*) FROM orders")[0][0]
    products = _rows(services["products"], "SELECT count(*) FROM products")[0][0]
    customers = _rows(services["orders"], "SELECT count(DISTINCT user_id) FROM orders")[0][0]
    verified = _table_rows(out, {"user_directory", "product_catalog", "order_summary"})
    verified.update(_table_rows(out, {"customer_stats"}))
    assert {name: cells[-2:] for name, cells in verified.items() if len(cells) == 2} == {
        "user_directory": [str(users), "0"],
        "product_catalog": [str(products), "0"],
        "order_summary": [str(orders), "0"],
        "customer_stats": [str(customers), "0"],
    }
    assert (users, orders) == (60, 200)
    assert _rows(store, "SELECT count(*) FROM order_summary WHERE customer_email IS NULL") == [(0,)]
    assert _rows(store, "SELECT count(*) FROM rm_parked_events") == [(0,)]


def test_demo_runs_again_in_the_same_directory_with_the_same_result(tmp_path: Path) -> None:
    directory = tmp_path / "again"
    directory.mkdir()
    theirs = [directory / "app.db", directory / "backup.db.gz", directory / "orders.db.bak"]
    for path in theirs:  # files of the user's that the demo must not touch
        path.write_bytes(b"not the demo's")
    args = ["demo", "--dir", str(directory), "--users", "20", "--orders", "40"]
    assert run_cli(args).exit_code == 0
    first = _rows(directory / "readstore.db", "SELECT * FROM order_summary ORDER BY order_id")

    result = run_cli(args)

    assert result.exit_code == 0, result.output
    again = _rows(directory / "readstore.db", "SELECT * FROM order_summary ORDER BY order_id")
    assert again == first and len(again) == 40
    assert [path.read_bytes() for path in theirs] == [b"not the demo's"] * 3
