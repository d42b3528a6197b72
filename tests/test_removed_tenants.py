"""A tenant removed from its registry (or a static member deleted from the config):
``status`` leaves it out once nothing of it waits, and marks it "removed" while it still
has parked rows or events the projections have not applied (never hidden)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from config import load_settings
from outbox.schema import PARKED_OUTBOX_ROW, log_heads, parked
from tests.cli_helpers import run_cli, write_config
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    record_sales,
    registry_sql,
    sales_for,
    tenant_source,
)
from tests.tenant_helpers import config_for
from workers.runtime import build_runtime
from workers.status import collect


def test_status_marks_removed_tenants_while_something_of_theirs_waits(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, acme, oldco, globex, initech = (pg_database() for _ in range(6))
    for url in (acme, oldco, globex, initech):
        init_tenant_outbox(url)
    make_registry(registry, {"acme": acme, "oldco": oldco, "globex": globex})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    for url in (acme, oldco, globex):
        record_sales(url, sales_for(1, 2))
    registry_sql(  # a malformed row: parked by the relay, kept in the log
        globex,
        "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
        "VALUES ('register', 'r9', 'SaleRecorded', '[1, 2, 3]')",
    )
    run_cli(["run", "--until-caught-up", "--config", str(config)])
    registry_sql(registry, "INSERT INTO tenants VALUES ('initech', :d, true)", d=initech)
    record_sales(initech, sales_for(1, 3))
    assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0  # not applied
    registry_sql(registry, "UPDATE tenants SET active = false WHERE tenant_id <> 'acme'")

    status = run_cli(["status", "--json", "--config", str(config)])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    sources = {s["source"]: s for s in report["sources"]}
    assert set(sources) == {"pos:acme", "pos:globex"}  # oldco: nothing of it waits
    assert sources["pos:acme"]["removed"] is False
    globex_status = sources["pos:globex"]
    assert (globex_status["parked"], globex_status["log_head"]) == (1, 2)
    assert globex_status["removed"] is True and globex_status["error"] is None
    (projection,) = report["projections"]
    lanes = {(lane["source"], lane["removed"]) for lane in projection["lanes"]}
    assert lanes == {("pos:acme", False), ("pos:initech", True)}
    assert max(lane["lag_events"] for lane in projection["lanes"]) == 3  # initech's

    text = run_cli(["status", "--config", str(config)])
    assert text.exit_code == 0, text.output
    sources_table, projections_table = text.stdout.split("projections")
    removed = r"[^\n]*(\n[^\n]*)?\(removed\)"  # the table wraps at 80 columns
    assert re.search("pos:globex" + removed, sources_table), sources_table
    assert re.search("pos:initech" + removed, projections_table), projections_table
    assert "oldco" not in text.stdout

    health = run_cli(["health", "--config", str(config), "--max-lag-events", "0"])
    assert health.exit_code == 1 and "source pos:initech" in health.output

    assert run_cli(["run", "--until-caught-up", "--config", str(config)]).exit_code == 0
    report = json.loads(run_cli(["status", "--json", "--config", str(config)]).stdout)
    assert {lane["source"] for lane in report["projections"][0]["lanes"]} == {"pos:acme"}
    assert {s["source"] for s in report["sources"]} == {"pos:acme", "pos:globex"}


def test_status_counts_the_parked_rows_of_all_removed_tenants_in_one_query(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, acme = (pg_database() for _ in range(3))
    init_tenant_outbox(acme)
    make_registry(registry, {"acme": acme})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    runtime = build_runtime(load_settings(config), migrate=False)
    statements: list[str] = []

    def record(_c: object, _cur: object, statement: str, *_: object) -> None:
        statements.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", record)  # the log's and the store's

    def gone(numbers: range) -> None:  # removed tenants, each with a parked outbox row and
        # a log head the projection has not reached (a lane with lag)
        with runtime.log.engine.begin() as conn:
            for n in numbers:
                conn.execute(log_heads.insert().values(source=f"pos:gone{n}", head=1))
                conn.execute(
                    parked.insert().values(
                        kind=PARKED_OUTBOX_ROW, source=f"pos:gone{n}", reason="bad row"
                    )
                )

    def parked_queries() -> tuple[int, dict[str, int]]:
        statements.clear()
        report = collect(runtime)
        count = sum("rm_parked" in s or "rm_event_log" in s for s in statements)
        return count, {s.source: s.parked for s in report.sources if s.removed}

    try:
        gone(range(1))
        few, removed = parked_queries()
        assert removed == {"pos:gone0": 1}
        gone(range(1, 40))
        many, removed = parked_queries()
        assert removed == {f"pos:gone{n}": 1 for n in range(40)}
        assert many == few  # not one more query per removed tenant
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
        runtime.close()


def test_a_removed_tenants_parked_events_keep_it_shown_and_none_is_removed_unread(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, acme, oldco = (pg_database() for _ in range(4))
    for url in (acme, oldco):
        init_tenant_outbox(url)
    make_registry(registry, {"acme": acme, "oldco": oldco})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(acme, sales_for(1, 2))
    record_sales(oldco, sales_for(1, 1))
    registry_sql(  # an event the projection refuses: parked, and nothing of oldco lags
        oldco,
        "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES "
        """('register', 'r9', 'SaleRecorded', '{"day": "d", "cents": "x", "n": 1}')""",
    )
    run_cli(["run", "--until-caught-up", "--config", str(config)])
    registry_sql(registry, "UPDATE tenants SET active = false WHERE tenant_id = 'oldco'")

    def lanes() -> dict[str, tuple[bool, int]]:
        status = run_cli(["status", "--json", "--config", str(config)])
        (projection,) = json.loads(status.stdout)["projections"]
        assert projection["parked_by_source"] == {"pos:oldco": 1}, projection
        return {
            lane["source"]: (lane["removed"], lane["lag_events"]) for lane in projection["lanes"]
        }

    assert lanes() == {"pos:acme": (False, 0), "pos:oldco": (True, 0)}

    # The registry cannot be read: no tenant is called removed (none is known to be).
    registry_sql(registry, "ALTER TABLE tenants RENAME TO tenants_away")
    status = run_cli(["status", "--json", "--config", str(config)])
    sources = json.loads(status.stdout)["sources"]
    assert [s["source"] for s in sources if s["removed"]] == []
    assert "cannot be read" in next(s["error"] for s in sources if s["source"] == "pos")
    assert lanes() == {"pos:acme": (False, 0), "pos:oldco": (False, 0)}


def test_static_members_deleted_from_the_config_are_marked_removed_like_registry_ones(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, acme, oldco, globex, initech = (pg_database() for _ in range(5))
    for url in (acme, oldco, globex, initech):
        init_tenant_outbox(url)

    def config(*tenants: tuple[str, str]) -> str:
        return str(
            write_config(
                tmp_path / "pos.toml",
                {
                    "store": {"url": store},
                    "projections": ["tests.tenant_fixtures"],
                    "sources": {f"pos:{t}": tenant_source(url, t) for t, url in tenants},
                },
            )
        )

    members = [("acme", acme), ("oldco", oldco), ("globex", globex)]
    assert run_cli(["migrate", "--config", config(*members)]).exit_code == 0
    for url in (acme, oldco, globex):
        record_sales(url, sales_for(1, 2))
    registry_sql(  # a malformed row: parked by the relay, kept in the log
        globex,
        "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
        "VALUES ('register', 'r9', 'SaleRecorded', '[1, 2, 3]')",
    )
    run_cli(["run", "--until-caught-up", "--config", config(*members)])
    record_sales(initech, sales_for(1, 3))
    relayed = run_cli(["relay", "--once", "--config", config(*members, ("initech", initech))])
    assert relayed.exit_code == 0, relayed.output  # relayed, not applied

    status = run_cli(["status", "--json", "--config", config(("acme", acme))])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    sources = {s["source"]: s for s in report["sources"]}
    assert set(sources) == {"pos:acme", "pos:globex"}  # oldco: nothing of it waits
    assert sources["pos:acme"]["removed"] is False
    assert (sources["pos:globex"]["removed"], sources["pos:globex"]["parked"]) == (True, 1)
    assert sources["pos:globex"]["error"] is None
    (projection,) = report["projections"]
    lanes = {(lane["source"], lane["removed"]) for lane in projection["lanes"]}
    assert lanes == {("pos:acme", False), ("pos:initech", True)}

    text = run_cli(["status", "--config", config(("acme", acme))])
    assert text.exit_code == 0, text.output
    sources_table, projections_table = text.stdout.split("projections")
    removed = r"[^\n]*(\n[^\n]*)?\(removed\)"  # the table wraps at 80 columns
    assert re.search("pos:globex" + removed, sources_table), sources_table
    assert re.search("pos:initech" + removed, projections_table), projections_table
    assert "oldco" not in text.stdout
