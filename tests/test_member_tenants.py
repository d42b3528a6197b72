"""Two static members of one group relaying as one tenant (a shop's table copied from
acme's, its ``tenant = "acme"`` left as it was) gave the second database's rows to acme's
reads (DESIGN.md invariant 6); a registry refuses a second row for one tenant, and the file
now refuses such members, naming both."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings
from tests.cli_helpers import run_cli, write_config
from tests.tenant_fixtures import tenant_source


def test_two_members_of_one_group_for_one_tenant_are_refused(tmp_path: Path) -> None:
    sources = {
        "pos:acme": tenant_source(f"sqlite:///{tmp_path / 'acme.db'}", "acme"),
        "pos:initech": tenant_source(f"sqlite:///{tmp_path / 'initech.db'}", "acme"),
    }
    config = write_config(
        tmp_path / "pos.toml",
        {"store": {"url": f"sqlite:///{tmp_path / 'rm.db'}"}, "sources": sources},
    )
    says = (
        "sources 'pos:acme' and 'pos:initech' are both tenant 'acme' of group 'pos': each "
        "member is one tenant's database; fix the tenant of one"
    )
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert says in str(refused.value)
    result = run_cli(["status", "--config", str(config)])
    assert result.exit_code == 2 and says in result.output, result.output

    # A member's tenant left out is its name: the same tenant as one written so.
    del sources["pos:acme"]["tenant"]
    config = write_config(
        tmp_path / "pos2.toml", {"store": {"url": "sqlite:///rm.db"}, "sources": sources}
    )
    with pytest.raises(ConfigError, match="both tenant 'acme' of group 'pos'"):
        load_settings(config)


def test_one_tenant_in_two_groups_and_ungrouped_sources_stand(tmp_path: Path) -> None:
    sources = {
        "pos:acme": tenant_source(f"sqlite:///{tmp_path / 'pos.db'}", "acme"),
        "shop:acme": tenant_source(f"sqlite:///{tmp_path / 'shop.db'}", "acme"),
        "orders": {"url": f"sqlite:///{tmp_path / 'orders.db'}", "tenant": "acme"},
        "billing": {"url": f"sqlite:///{tmp_path / 'billing.db'}", "tenant": "acme"},
    }
    settings = load_settings(None, store={"url": "sqlite:///rm.db"}, sources=sources)
    assert {name: s.tenant for name, s in settings.sources.items()} == dict.fromkeys(
        sources, "acme"
    )
