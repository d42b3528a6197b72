"""A projection subscribed to a source no configuration lists (a typo in its ``@on``) never
received an event, and ``status`` showed it caught up (lag 0). It is refused when the
runtime is built (exit 2), naming the projection and the name and listing the configured
sources. A tenant registry's members are listed at run time, so any member of its group is
taken; so is a source the event log has events of (retired from the configuration), and a
configuration listing no source (a worker's, whose relays run elsewhere)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config import SourceSettings
from outbox.log import EventLog
from tests.cache_helpers import append
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, migrate_store

FIXTURES = "tests.subscription_fixtures"


def _config(tmp_path: Path, store: str, projections: list[str], **more: Any) -> Path:
    migrate_store(store)
    return write_config(
        tmp_path / "rm.toml",
        {"projections": [f"{FIXTURES}:{p}" for p in projections], "store": {"url": store}, **more},
    )


def _message(result: Any) -> str:
    return " ".join(result.stderr.split())


@pytest.mark.parametrize(
    "command",
    [["status", "--json"], ["run", "--until-caught-up"], ["parked", "list"]],
    ids=lambda command: command[0],
)
def test_a_subscription_to_a_source_nothing_lists_is_refused(
    command: list[str], store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """Before, ``status`` exited 0 showing ``typo_counts`` caught up on ``bnak``."""
    bank = sqlite_database()
    init_outbox(SourceSettings(url=bank), "bank")
    config = _config(tmp_path, store_url, ["Typo"], sources={"bank": {"url": bank}})

    result = run_cli([*command, "--config", str(config)])

    assert result.exit_code == 2, result.output
    message = _message(result)
    assert "projection 'typo_counts' subscribes to source 'bnak'" in message
    assert "([sources.*], [tenants.*], external_sources: 'bank')" in message
    assert "(did you mean 'bank'?)" in message
    assert result.stdout == ""


def test_a_member_of_a_static_group_its_sources_do_not_list_is_refused(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    config = _config(
        tmp_path, store_url, ["ShopTypo"], sources={"shop:acme": {"url": sqlite_database()}}
    )

    result = run_cli(["parked", "list", "--config", str(config)])

    assert result.exit_code == 2, result.output
    message = _message(result)
    assert "projection 'shop_typo' subscribes to source 'shop:acmee'" in message
    assert "'shop:acme'" in message


def test_registry_members_groups_and_configured_sources_load(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """``pos:acme`` (a member the registry lists at run time), ``pos`` (the registry's
    group) and ``shop`` (the group of the configured member ``shop:acme``)."""
    config = _config(
        tmp_path,
        store_url,
        ["AcmeSales", "AllSales"],
        sources={"shop:acme": {"url": sqlite_database()}},
        tenants={"pos": {"url": sqlite_database()}},
    )

    result = run_cli(["parked", "list", "--json", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "[]"


def test_a_source_the_log_has_events_of_loads(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    config = _config(tmp_path, store_url, ["Legacy"], sources={"bank": {"url": sqlite_database()}})
    refused = run_cli(["parked", "list", "--config", str(config)])
    assert refused.exit_code == 2, refused.output
    assert "subscribes to source 'legacy'" in _message(refused)
    log = EventLog(store_url)
    try:
        append(log, "legacy", [("account", "a1", "Deposited", {"amount": 5})] * 2)
    finally:
        log.close()

    result = run_cli(["parked", "list", "--json", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "[]"


def test_a_configuration_listing_no_source_loads(store_url: str, tmp_path: Path) -> None:
    """A worker's configuration whose relays run on others: nothing to check against."""
    config = _config(tmp_path, store_url, ["Typo"])

    result = run_cli(["parked", "list", "--json", "--config", str(config)])

    assert result.exit_code == 0, result.output
