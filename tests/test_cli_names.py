"""Member names are printed as written: rich would draw ``pos:x:`` as an emoji."""

from __future__ import annotations

import json
from pathlib import Path

from outbox.db import create_engine
from tests.cli_helpers import run_cli
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    pending_rows,
    record_sales,
    sales_for,
)
from tests.tenant_helpers import config_for


def test_cli_output_shows_member_names_literally(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    tenants = {t: f"sqlite:///{tmp_path / f'{t}.db'}" for t in ("x", "ok", "a")}
    for url in tenants.values():
        init_tenant_outbox(url)
        record_sales(url, sales_for(1, 2))
    make_registry(registry, dict(tenants))
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    outputs = [
        run_cli(["outbox", "init", "--source", "pos", "--config", str(config)]).output,
        run_cli(["relay", "--once", "--config", str(config)]).output,
        run_cli(["status", "--config", str(config)]).output,
    ]
    text = "\n".join(outputs)
    for tenant in ("x", "ok", "a"):
        assert f"pos:{tenant}: relayed 2" in outputs[1]
        assert f"pos:{tenant}: outbox table" in outputs[0]
    assert "pos:x" in outputs[2]
    assert not any(emoji in text for emoji in ("❌", "🆗", "🅰")), text


def test_a_registry_member_is_relayed_alone_and_a_group_lists_its_parked_rows(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    tenants = {t: f"sqlite:///{tmp_path / f'{t}.db'}" for t in ("acme", "globex")}
    for url in tenants.values():
        init_tenant_outbox(url)
        record_sales(url, sales_for(1, 2))
    engine = create_engine(tenants["acme"])
    with engine.begin() as conn:  # a row that cannot become an event: parked
        conn.exec_driver_sql(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
            "VALUES ('register', 'r9', 'SaleRecorded', 'not json')"
        )
    engine.dispose()
    make_registry(registry, dict(tenants))
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    one = run_cli(["relay", "--once", "--source", "pos:acme", "--config", str(config)])
    assert one.exit_code == 0, one.output
    assert "pos:acme: relayed 2" in one.stdout and "pos:globex" not in one.output
    assert pending_rows(tenants["globex"]) == 2
    missing = run_cli(["relay", "--once", "--source", "pos:nope", "--config", str(config)])
    assert missing.exit_code == 2, missing.output
    assert (  # what it lists, as outbox init says it (not only the members asked for)
        "tenant registry 'pos' lists no 'pos:nope' (it lists: pos:acme, pos:globex)"
        in " ".join(missing.output.split())
    )

    listed = run_cli(["parked", "list", "--source", "pos", "--json", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert [e["source"] for e in json.loads(listed.stdout)] == ["pos:acme"]
    other = run_cli(["parked", "list", "--source", "po", "--json", "--config", str(config)])
    assert json.loads(other.stdout) == []
