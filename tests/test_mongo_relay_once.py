"""``readmodel relay --once`` on a MongoDB source whose lease another relay holds: a dead
relay's lease is taken over once it has run out, a live relay's is left alone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config import Settings
from outbox.log import EventLog
from outbox.mongo import LEASES, MongoOutboxSource
from outbox.sources import open_source
from tests.cli_helpers import flat_toml, run_cli
from tests.outbox_helpers import MongoOutboxDb, init_outbox, migrate_store

SOURCE = "chat"


@pytest.fixture
def chat(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> Iterator[tuple[Settings, MongoOutboxDb, Path]]:
    url = mongo_database()
    settings = make_settings(pg_database(), {SOURCE: {"url": url, "lease": "2s"}})
    init_outbox(settings.sources[SOURCE])
    migrate_store(settings.store.url)
    config = tmp_path / "readmodel.toml"
    source = {"url": url, "lease": "2s"}
    config.write_text(
        flat_toml({"store": {"url": settings.store.url}, f"sources.{SOURCE}": source}),
        encoding="utf-8",
    )
    db = MongoOutboxDb(url)
    yield settings, db, config
    db.close()


def _logged(settings: Settings) -> list[dict[str, object]]:
    log = EventLog(settings.store.url)
    try:
        return [e.payload for e in log.read(SOURCE)]
    finally:
        log.close()


def test_relay_once_takes_over_the_lease_a_killed_relay_left(
    chat: tuple[Settings, MongoOutboxDb, Path],
) -> None:
    """A relay SIGKILLed (or its machine lost) leaves its lease document: each ``relay
    --once`` saw it for the first time, said "another relay is active; skipped" and exited 0,
    run after run, and nothing was relayed again."""
    settings, db, config = chat
    db.db.get_collection(LEASES).insert_one(
        {
            "_id": "outbox",
            "owner": "gone:4242:0badc0de",
            "beat": 17,
            "renewed_at": datetime.now(UTC),
        }
    )
    db.insert(
        [("room", "r1", "MessagePosted", {"n": 1}), ("room", "r1", "MessagePosted", {"n": 2})]
    )

    result = run_cli(["relay", "--once", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.output
    assert "chat: relayed 2, duplicates 0, parked 0" in result.output
    assert _logged(settings) == [{"n": 1}, {"n": 2}]
    assert db.outbox.count_documents({}) == 0
    assert db.db.get_collection(LEASES).count_documents({}) == 0  # handed over on exit


def test_relay_once_leaves_a_live_relays_lease_alone(
    chat: tuple[Settings, MongoOutboxDb, Path],
) -> None:
    settings, db, config = chat
    leader = open_source(SOURCE, settings.sources[SOURCE])
    assert isinstance(leader, MongoOutboxSource) and leader.try_lead()
    stop = threading.Event()

    def renew() -> None:
        while not stop.is_set():
            leader.try_lead()
            stop.wait(0.05)

    renewing = threading.Thread(target=renew, daemon=True)
    renewing.start()
    try:
        db.insert([("room", "r1", "MessagePosted", {"n": 1})])
        result = run_cli(["relay", "--once", "--config", str(config)])
        assert result.exit_code == 0, result.output
        assert "chat: another relay is active; skipped" in result.output
        assert _logged(settings) == []
        lease = db.db.get_collection(LEASES).find_one({"_id": "outbox"})
        assert lease is not None and lease["owner"] == leader._owner
    finally:
        stop.set()
        renewing.join()
        leader.close()
