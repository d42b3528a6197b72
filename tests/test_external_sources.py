"""Sources another deployment relays (``external_sources``): users split relays across
deployments, so a worker's configuration lists its own sources while a projection also
reads one relayed elsewhere. Before, that projection was refused on a brand-new log until
the other deployment had relayed an event of the source. Listed in ``external_sources``, it
loads (a group name covers its members); a name nothing feeds is still refused, the message
naming the closest fed name and ``external_sources``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config import SourceSettings, load_settings
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


def test_a_source_relayed_elsewhere_loads_on_a_new_log(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    bank = sqlite_database()
    init_outbox(SourceSettings(url=bank), "bank")
    config = _config(
        tmp_path,
        store_url,
        ["Split"],
        sources={"bank": {"url": bank}},
        external_sources=["payments"],
    )

    result = run_cli(["run", "--until-caught-up", "--config", str(config)])

    assert result.exit_code == 0, result.output
    engine = sa.create_engine(store_url)
    try:
        assert sa.inspect(engine).has_table("split_counts")
    finally:
        engine.dispose()


def test_without_the_declaration_the_refusal_says_how_to_declare_it(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    config = _config(tmp_path, store_url, ["Split"], sources={"bank": {"url": sqlite_database()}})

    result = run_cli(["parked", "list", "--config", str(config)])

    assert result.exit_code == 2, result.output
    message = _message(result)
    assert "projection 'split_counts' subscribes to source 'payments'" in message
    assert "([sources.*], [tenants.*], external_sources: 'bank')" in message
    assert "if another deployment relays it into this event log, list it in external_sources" in (
        message
    )
    assert "did you mean" not in message


def test_a_typo_is_refused_naming_the_closest_fed_name(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """``bnak`` beside the configured ``bank``; and checked where the configuration lists
    only external sources (before, a configuration without [sources] was not checked)."""
    config = _config(tmp_path, store_url, ["Typo"], external_sources=["bank"])

    result = run_cli(["parked", "list", "--config", str(config)])

    assert result.exit_code == 2, result.output
    message = _message(result)
    assert "projection 'typo_counts' subscribes to source 'bnak'" in message
    assert "it would never receive one (did you mean 'bank'?)" in message


def test_an_external_group_covers_its_members(store_url: str, tmp_path: Path) -> None:
    """``pos`` relayed elsewhere (a tenant registry there): ``pos`` and ``pos:acme``;
    ``shop`` is the group of the external member ``shop:acme``."""
    config = _config(
        tmp_path, store_url, ["AcmeSales", "AllSales"], external_sources=["pos", "shop:acme"]
    )

    result = run_cli(["parked", "list", "--json", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "[]"


def test_a_source_both_configured_and_external_is_refused(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    config = _config(
        tmp_path,
        store_url,
        ["Split"],
        sources={"bank": {"url": sqlite_database()}},
        external_sources=["bank", "payments"],
    )

    result = run_cli(["status", "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert (
        "external_sources: 'bank' is configured in [sources.*] (relayed here) and listed as "
        "relayed elsewhere: keep one"
    ) in _message(result)


def test_the_readme_example_loads(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text[text.index("Relays split across deployments") :]
    block = block[block.index("```toml\n") + 8 :]
    path = tmp_path / "worker.toml"
    path.write_text(block[: block.index("```")], encoding="utf-8")

    settings = load_settings(path)

    assert settings.external_sources == ["payments", "pos"]
    assert list(settings.sources) == ["bank"]
