"""Member names are printed as written: rich would draw ``pos:x:`` as an emoji."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import run_cli
from tests.tenant_fixtures import init_tenant_outbox, make_registry, record_sales, sales_for
from tests.test_tenant_failures import config_for


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
