"""A document store that cannot be reached costs only its own figures: ``metrics`` says
``readmodel_store_up`` 0 for it and 1 for the store that answers, and gives the sources'
figures and the other projections' lag; ``status --json`` prints them too, with the store
named unreachable, and exits 3.

The MongoDB store is a real MongoDB-wire server, migrated, then stopped."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config import load_settings
from outbox.db import create_engine
from tests.cli_helpers import run_cli, write_config
from tests.metrics_helpers import collected
from tests.mongo_helpers import secantus_server
from tests.outbox_helpers import init_outbox, insert_events

INBOX = "projections.reference.conversation_inbox:ConversationInbox"


@pytest.fixture
def config(tmp_path: Path, sqlite_database: Callable[[], str]) -> Iterator[Path]:
    """``totals`` in a SQLite store, 3 events behind; ``conversation_inbox`` in a MongoDB
    store whose server is stopped."""
    with secantus_server() as server:
        path = write_config(
            tmp_path / "readmodel.toml",
            {
                "projections": [INBOX, "tests.projection_fixtures:Totals"],
                "store": {"url": sqlite_database()},
                "stores": {
                    "docs": {
                        "url": f"{server}/rm_docs?directConnection=true"
                        "&serverSelectionTimeoutMS=500&connectTimeoutMS=500"
                    }
                },
                "sources": {name: {"url": sqlite_database()} for name in ("auth", "bank", "chat")},
            },
        )
        migrated = run_cli(["migrate", "--config", str(path)])
        assert migrated.exit_code == 0, migrated.output
    settings = load_settings(path)
    for name in ("auth", "bank", "chat"):
        init_outbox(settings.sources[name], name)
    bank = create_engine(settings.sources["bank"].url)
    try:
        insert_events(
            bank,
            [("account", f"acct-{i}", "Deposited", {"amount": 1, "seq": 1}) for i in range(3)],
        )
    finally:
        bank.dispose()
    relayed = run_cli(["relay", "--once", "--config", str(path)])
    assert relayed.exit_code == 0, relayed.output
    yield path


def test_metrics_lose_only_the_unreachable_stores_figures(config: Path) -> None:
    families = collected(config)

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }
    assert samples[("readmodel_store_up", (("store", "docs"),))] == 0
    assert samples[("readmodel_store_up", (("store", "default"),))] == 1
    assert samples[("readmodel_source_up", (("source", "bank"),))] == 1
    assert samples[("readmodel_log_head", (("source", "bank"),))] == 3
    lag = (("projection", "totals"), ("source", "bank"))
    assert samples[("readmodel_projection_lag_events", lag)] == 3
    assert not [
        key
        for key in samples
        if key[0].startswith("readmodel_projection")
        and ("projection", "conversation_inbox") in key[1]
    ]


def test_status_json_shows_the_store_unreachable_and_the_rest(config: Path) -> None:
    result = run_cli(["status", "--json", "--config", str(config)])

    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert {s["source"]: s["log_head"] for s in document["sources"]} == {
        "auth": 0,
        "bank": 3,
        "chat": 0,
    }
    assert [(p["projection"], p["lag_events"]) for p in document["projections"]] == [("totals", 3)]
    stores = {s["store"]: s for s in document["stores"]}
    assert stores["default"]["error"] is None
    assert stores["docs"]["projections"] == ["conversation_inbox"]
    assert "read store docs" in stores["docs"]["error"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "read store docs" in errors[0], result.stderr


def test_health_json_names_the_unreachable_store(config: Path) -> None:
    result = run_cli(["health", "--json", "--timeout", "5", "--config", str(config)])

    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert not document["healthy"]
    assert [p["subject"] for p in document["problems"]] == ["store docs"]
    assert [p["projection"] for p in document["status"]["projections"]] == ["totals"]
