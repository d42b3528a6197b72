"""The MongoDB outbox source on a real MongoDB-wire server: lease leadership and takeover
(SIGKILLed relay processes), BSON values, malformed documents, change-stream wake-ups,
configuration and the CLI. The contract every source keeps is in test_source_contract.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from bson import Binary, Decimal128, ObjectId

from config import ConfigError, Settings, load_settings
from outbox.errors import NotLeaderError
from outbox.log import EventLog
from outbox.mongo import LEASES, MongoOutboxSource
from outbox.parking import ParkedEvents
from outbox.relay import Relay, RelayHooks, SourceRelay
from outbox.rows import decode_rows
from outbox.schema import log_heads
from outbox.sources import open_source
from tests.cli_helpers import flat_toml, run_cli
from tests.outbox_helpers import MongoOutboxDb, init_outbox, migrate_store
from tests.relay_helpers import RelayFleet, running, wait_for

SOURCE = "chat"


@pytest.fixture
def chat(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> Iterator[tuple[Settings, MongoOutboxDb]]:
    url = mongo_database()
    settings = make_settings(
        pg_database(), {SOURCE: {"url": url, "lease": "600ms", "poll_max": "100ms"}}
    )
    init_outbox(settings.sources[SOURCE])
    db = MongoOutboxDb(url)
    yield settings, db
    db.close()


def _source(settings: Settings) -> MongoOutboxSource:
    source = open_source(SOURCE, settings.sources[SOURCE])
    assert isinstance(source, MongoOutboxSource)
    return source


def test_a_standby_waits_while_the_leader_renews_and_takes_over_when_it_stops(
    chat: tuple[Settings, MongoOutboxDb],
) -> None:
    settings, db = chat
    db.insert([("room", "r1", "MessagePosted", {"n": 1})])
    leader, standby = _source(settings), _source(settings)
    try:
        assert leader.try_lead()
        # The leader renews (as the relay does before every step): for three leases the
        # standby sees the beat move and never leads.
        until = time.monotonic() + 3 * 0.6
        while time.monotonic() < until:
            assert leader.try_lead()
            assert not standby.try_lead()
            time.sleep(0.05)
        beat = db.db.get_collection(LEASES).find_one({"_id": "outbox"})
        assert beat is not None and beat["beat"] >= 6

        # The leader stops renewing (a stalled process): after one lease the standby leads,
        # and the old leader may neither claim nor lead again.
        wait_for(standby.try_lead, 5, "the standby to take over")
        assert time.monotonic() - leader._renewed >= 0.6  # a whole lease after the last beat
        assert [row[5] for row in standby.claim(10)] == [{"n": 1}]
        with pytest.raises(NotLeaderError):
            leader.claim(10)
        assert not leader.try_lead()
        lease = db.db.get_collection(LEASES).find_one({"_id": "outbox"})
        assert lease is not None and lease["owner"] == standby._owner
    finally:
        leader.close()
        standby.close()


def test_a_leader_that_closes_hands_over_at_once(chat: tuple[Settings, MongoOutboxDb]) -> None:
    settings, db = chat
    first, second = _source(settings), _source(settings)
    try:
        assert first.try_lead()
        assert not second.try_lead()
        first.close()
        assert second.try_lead()  # no lease to wait out
        assert db.db.get_collection(LEASES).count_documents({}) == 1
    finally:
        first.close()
        second.close()


def test_bson_values_reach_the_log_as_json_and_malformed_documents_are_parked(
    chat: tuple[Settings, MongoOutboxDb],
) -> None:
    settings, db = chat
    oid = ObjectId()
    at = datetime(2026, 5, 1, 10, 30, tzinfo=UTC)
    db.insert_documents(
        [
            {
                "aggregatetype": "room",
                "aggregateid": oid,
                "type": "MessagePosted",
                "payload": {
                    "author": oid,
                    "price": Decimal128(Decimal("12.50")),
                    "sent_at": at,
                    "tags": ["a", Binary(b"raw \xff bytes")],
                    "nested": {"id": ObjectId(str(oid))},
                },
                "headers": {"correlation_id": "c-1"},
                "tenant_id": "acme",
            },
            {"aggregatetype": "room", "type": "MessagePosted", "payload": {"n": 2}},
            {"aggregatetype": "room", "aggregateid": "r1", "type": "X", "payload": "not json"},
            {"aggregatetype": "room", "aggregateid": "r1", "type": "X", "payload": [1, 2]},
            {"aggregatetype": "room", "aggregateid": "r2", "type": "NotificationSent"},
            {"aggregatetype": "room", "aggregateid": "r3", "type": "Ok", "payload": {"n": 3}},
        ]
    )
    relay = Relay(settings)
    try:
        totals = relay.drain()[SOURCE]
        assert (totals.relayed, totals.parked) == (2, 4)
        first, last = relay.log.read(SOURCE)
        parked = ParkedEvents(relay.log.engine).list(source=SOURCE)
    finally:
        relay.close()
    assert first.aggregate_id == str(oid)
    assert first.payload == {
        "author": str(oid),
        "price": "12.50",
        "sent_at": "2026-05-01T10:30:00+00:00",
        "tags": ["a", {"$base64": "cmF3IP8gYnl0ZXM="}],
        "nested": {"id": str(oid)},
    }
    assert first.tenant == "acme"
    assert first.correlation_id == "c-1"
    assert (last.aggregate_id, last.payload) == ("r3", {"n": 3})
    reasons = sorted(entry.reason for entry in parked)
    assert reasons[:3] == [
        "missing aggregate id (column 'aggregateid' is NULL)",
        "missing payload (column 'payload' is NULL)",
        "payload (column 'payload') is a JSON array, expected an object",
    ]
    assert reasons[3].startswith("payload (column 'payload') is not valid JSON: ")
    raw = next(entry.raw for entry in parked if entry.aggregate_id is None)
    assert raw["aggregatetype"] == "room" and raw["payload"] == {"n": 2}
    assert db.count(pending_only=False) == 0  # parked documents are acknowledged too


def test_a_mongodb_source_records_no_binary_ids_rule_in_the_log(
    chat: tuple[Settings, MongoOutboxDb],
) -> None:
    """BSON UUIDs and ObjectIds become ids whatever ``binary_ids`` says (which MongoDB
    sources must leave at ``text``): its head row names no rule, after relayed and parked
    documents, and after a new leader's check, so no rule refuses a relay of it."""
    settings, db = chat
    room = {"aggregatetype": "room", "type": "MessagePosted", "payload": {"n": 1}}
    db.insert_documents(
        [
            {**room, "aggregateid": Binary(uuid.uuid4().bytes, 4)},
            {**room, "aggregateid": ObjectId()},
            {"aggregatetype": "room", "type": "MessagePosted", "payload": {"n": 2}},  # parked
        ]
    )
    for _ in range(2):  # each drain leads anew: adopt_rule would record a rule then
        relay = Relay(settings)
        try:
            totals = relay.drain()[SOURCE]
            with relay.log.engine.connect() as conn:
                heads = conn.execute(
                    sa.select(log_heads.c.source, log_heads.c.head, log_heads.c.binary_ids)
                ).all()
        finally:
            relay.close()
        db.insert_documents([{**room, "aggregateid": "r1"}])
    assert (totals.relayed, totals.parked) == (1, 0)
    assert [tuple(head) for head in heads] == [(SOURCE, 3, None)]


def test_an_inserted_document_wakes_the_relay_long_before_the_next_poll(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url = mongo_database()
    settings = make_settings(
        pg_database(), {SOURCE: {"url": url, "poll_min": "10s", "poll_max": "10s"}}
    )
    init_outbox(settings.sources[SOURCE])
    db = MongoOutboxDb(url)
    relay = Relay(settings)
    try:
        db.insert([("room", "r0", "MessagePosted", {"n": 0})])
        with running(relay):
            wait_for(lambda: relay.log.head(SOURCE) == 1, 10, "the first document")
            time.sleep(0.3)  # the relay is asleep now, until the next poll in 10 s
            db.insert([("room", "r1", "MessagePosted", {"n": 1})])
            took = wait_for(lambda: relay.log.head(SOURCE) == 2, 8, "the change stream")
        assert took < 5, f"woken after {took:.2f}s: by the poll, not by the change stream"
    finally:
        relay.close()
        db.close()


def _write_chat(db: MongoOutboxDb, rooms: int, per_room: int, stop: threading.Event) -> None:
    """Four writers, each owning some rooms, commit one room's message at a time."""

    def writer(first: int) -> None:
        for k in range(1, per_room + 1):
            for room in range(first, rooms, 4):
                if stop.is_set():
                    return
                db.insert([("room", f"room-{room}", "MessagePosted", {"room": room, "k": k})])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.chaos
def test_sigkilled_relays_deliver_every_document_once_in_room_order(
    mongo_database: Callable[[], str], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url = mongo_database()
    store = {"url": pg_database()}
    relay = {"standby_retry": "100ms"}
    source = {"url": url, "batch_size": 100, "poll_max": "100ms", "lease": "1s"}
    config = tmp_path / "readmodel.toml"
    config.write_text(
        flat_toml(
            {
                "store": store,
                "relay": relay,
                "logging": {"level": "debug"},
                f"sources.{SOURCE}": source,
            }
        ),
        encoding="utf-8",
    )
    settings = load_settings(config)
    init_outbox(settings.sources[SOURCE])
    migrate_store(store["url"])
    db = MongoOutboxDb(url)
    fleet = RelayFleet(config, tmp_path)
    stop = threading.Event()
    rooms, per_room = 40, 40
    writing = threading.Thread(target=_write_chat, args=(db, rooms, per_room, stop))
    log = EventLog(store["url"])
    try:
        fleet.start()
        fleet.start()
        writing.start()
        deadline = time.monotonic() + 60
        while fleet.leader_kills < 4 or writing.is_alive():
            assert time.monotonic() < deadline, f"relays did not lead\n{fleet.logs()}"
            time.sleep(0.4)
            fleet.check_alive()
            leader = fleet.leader()
            if leader is None or fleet.leader_kills >= 4:
                continue
            fleet.kill(leader, was_leader=True)
            fleet.start()
        wait_for(
            lambda: log.head(SOURCE) >= rooms * per_room and db.count(pending_only=False) == 0,
            60,
            f"the relays to catch up\n{fleet.logs()}",
        )
        assert fleet.takeovers() >= 1, fleet.logs()
        # A relay started after the last kill may not lead yet: wait for one, then two live
        # relays that both lead would be two leaders.
        wait_for(
            lambda: any(_leads_now(r.log_text()) for r in fleet.alive),
            30,
            f"a live relay to lead\n{fleet.logs()}",
        )
        assert sum(_leads_now(r.log_text()) for r in fleet.alive) == 1, fleet.logs()
        statuses = fleet.stop()
        assert statuses and all(code == 0 for code in statuses.values()), fleet.logs()

        events = log.read(SOURCE, limit=rooms * per_room + 100)
        assert [e.position for e in events] == list(range(1, rooms * per_room + 1))
        assert len({e.event_id for e in events}) == rooms * per_room
        order: dict[int, list[int]] = defaultdict(list)
        for event in events:
            order[event.payload["room"]].append(event.payload["k"])
        assert order == {room: list(range(1, per_room + 1)) for room in range(rooms)}
        assert log.parked_outbox_count(SOURCE) == 0
    finally:
        stop.set()
        if writing.is_alive():
            writing.join()
        fleet.kill_all()
        log.close()
        db.close()


def _leads_now(log: str) -> bool:
    """Whether a relay's log says it leads: it took the lead and has not lost it since."""
    lost = max(log.rfind("lost the lead"), log.rfind("relay step failed"))
    return log.rfind("leading source") > lost


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb://127.0.0.1:27017", "names no database"),
        ("mongodb://127.0.0.1:27017/?replicaSet=rs0", "names no database"),
        ("mongodb:///chat", "names no host"),
        ("mongodb://127.0.0.1/chat.db", "not a valid MongoDB database name"),
        ("mongodb://user:pa ss@127.0.0.1/chat", "contains a space"),
        ("mongodb://user:pass@127.0.0.1:99999/chat", "Port must be an integer"),
        ("mongodb+srv://h1,h2/chat", "names one host name"),
        ("mongodb://127.0.0.1/chat?replicaSet=rs&foo", "key=value pairs"),
        ("mongodb://127.0.0.1/ch%2Fat", "not a valid MongoDB database name"),
    ],
)
def test_a_bad_mongodb_url_is_a_config_error_naming_the_key(
    tmp_path: Path, url: str, message: str
) -> None:
    config = tmp_path / "readmodel.toml"
    config.write_text(flat_toml({"sources.chat": {"url": url}}), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    text = str(raised.value)
    assert "sources.chat.url" in text and message in text and str(config) in text
    assert "pa ss" not in text and ":pass@" not in text


def test_schema_is_refused_for_a_mongodb_source(tmp_path: Path) -> None:
    config = tmp_path / "readmodel.toml"
    config.write_text(
        flat_toml({"sources.chat": {"url": "mongodb://h/chat", "schema": "public"}}),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="schema does not apply to MongoDB"):
        load_settings(config)


def test_outbox_init_status_and_health_on_a_mongodb_source(
    chat: tuple[Settings, MongoOutboxDb], tmp_path: Path
) -> None:
    settings, db = chat
    config = tmp_path / "readmodel.toml"
    source: dict[str, Any] = {"url": settings.sources[SOURCE].url, "on_dispatch": "mark"}
    config.write_text(
        flat_toml({"store": {"url": settings.store.url}, "sources.chat": source}), encoding="utf-8"
    )
    printed = run_cli(["outbox", "init", "--source", SOURCE, "--print", "--config", str(config)])
    assert printed.exit_code == 0, printed.output
    assert "createIndex({'seq': 1}, {unique: true})" in printed.output
    assert "createIndex({'dispatched_at': 1, 'seq': 1})" in printed.output

    applied = run_cli(["outbox", "init", "--source", SOURCE, "--config", str(config)])
    assert applied.exit_code == 0, applied.output
    indexes = {tuple(i["key"]) for i in db.outbox.index_information().values()}
    assert {(("seq", 1),), (("dispatched_at", 1), ("seq", 1))} <= indexes

    migrate_store(settings.store.url)
    db.insert([("room", f"r{i}", "MessagePosted", {"n": i}) for i in range(3)])
    status = run_cli(["status", "--json", "--config", str(config)])
    assert status.exit_code == 0, status.output
    (chat_status,) = json.loads(status.output)["sources"]
    assert chat_status["engine"] == "mongodb"
    assert chat_status["undelivered"] == 3
    assert 0 <= chat_status["oldest_undelivered_age_seconds"] < 60
    assert chat_status["error"] is None


def test_documents_without_an_orderable_position_are_parked_and_shared_positions_not_lost(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """No unique index (outbox init was not run): two documents share seq 2, one has no seq,
    one a text seq. The first two are both relayed (acknowledged by _id, not by seq), the
    others parked, and the rest flow in order."""
    url = mongo_database()
    settings = make_settings(pg_database(), {SOURCE: {"url": url, "batch_size": 2}})
    db = MongoOutboxDb(url)

    def doc(seq: Any, n: int, **more: Any) -> dict[str, Any]:
        document = {"id": f"e{n}", "aggregatetype": "room", "aggregateid": "r1"}
        document |= {"type": "MessagePosted", "payload": {"n": n}, **more}
        if seq is not None:
            document["seq"] = seq
        return document

    db.outbox.insert_many(
        [doc(1, 1), doc(2, 2), doc(2, 3), doc(None, 4), doc("5", 5), doc(6, 6), doc(7, 7)]
    )
    relay = Relay(settings)
    try:
        totals = relay.drain()[SOURCE]
        logged = [e.payload["n"] for e in relay.log.read(SOURCE)]
        parked = ParkedEvents(relay.log.engine).list(source=SOURCE)
    finally:
        relay.close()
        db.close()
    assert (totals.relayed, totals.parked, totals.errors) == (5, 2, [])
    assert logged[:1] == [1] and sorted(logged[1:3]) == [2, 3] and logged[3:] == [6, 7]
    assert sorted(p.reason for p in parked) == [
        "no position to order it by ('seq' = '5')",
        "no position to order it by ('seq' = None)",
    ]


def test_bson_values_json_cannot_hold_park_their_document(
    chat: tuple[Settings, MongoOutboxDb],
) -> None:
    from bson import Regex, Timestamp
    from bson.datetime_ms import DatetimeMS

    settings, db = chat
    source = _source(settings)
    try:
        base = {"seq": 1, "id": "e1", "aggregatetype": "room", "aggregateid": "r1"}
        base["type"] = "MessagePosted"
        cases = {
            "nan": ({"payload": {"x": float("nan")}}, "field 'payload' holds nan"),
            "regex": ({"payload": {"x": Regex("^a")}}, "a BSON Regex value"),
            "stamp": ({"payload": {"x": Timestamp(5, 1)}}, "a BSON Timestamp value"),
            "far date": ({"payload": {}, "timestamp": DatetimeMS(2**62)}, "outside years"),
        }
        for name, (fields, reason) in cases.items():
            row = source._row({**base, **fields})
            records, malformed = decode_rows(
                [row],
                source=SOURCE,
                column_names=source.column_names,
                default_tenant=None,
                max_payload_bytes=1 << 20,
            )
            assert records == [], name
            assert reason in malformed[0].reason, (name, malformed[0].reason)
            assert malformed[0].source_position == 1
            assert malformed[0].raw["payload"] is not None  # kept for whoever looks at it
    finally:
        source.close()


def test_a_drain_longer_than_the_lease_renews_it(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url = mongo_database()
    # 3 s: a loaded machine can stall one batch past a shorter lease, which is not this test.
    settings = make_settings(pg_database(), {SOURCE: {"url": url, "lease": "3s", "batch_size": 4}})
    db = MongoOutboxDb(url)
    db.insert([("room", f"r{i % 7}", "MessagePosted", {"n": i}) for i in range(1200)])
    relay = Relay(settings)
    try:
        started = time.monotonic()
        totals = relay.drain()[SOURCE]
        took = time.monotonic() - started
        assert (totals.relayed, totals.errors) == (1200, [])
        assert took > 3.0, "the drain was too short to need a renewal"
        assert db.count(pending_only=False) == 0
    finally:
        relay.close()
        db.close()


def test_an_idle_leader_keeps_its_lease_when_polls_are_longer_than_it(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url = mongo_database()
    source = {"url": url, "lease": "600ms", "poll_min": "3s", "poll_max": "3s"}
    settings = make_settings(pg_database(), {SOURCE: source})
    init_outbox(settings.sources[SOURCE])
    changes: list[tuple[str, bool]] = []

    class Watch(RelayHooks):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_leadership(self, source: str, leading: bool) -> None:
            changes.append((self.name, leading))

    log = EventLog(settings.store.url)
    relays = [
        SourceRelay(open_source(SOURCE, settings.sources[SOURCE]), log, hooks=[Watch(n)])
        for n in ("A", "B")
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=r.run, args=(stop,)) for r in relays]
    try:
        threads[0].start()
        wait_for(lambda: ("A", True) in changes, 10, "A to lead")
        threads[1].start()
        time.sleep(4 * 0.6 + 3)  # several leases, and a whole poll interval
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        log.close()
    assert changes[:1] == [("A", True)]
    assert ("B", True) not in changes, changes


def test_a_relay_wakes_again_after_its_change_stream_died(
    chat: tuple[Settings, MongoOutboxDb],
) -> None:
    settings, db = chat
    source = _source(settings)
    stop = threading.Event()
    try:
        assert source.try_lead() and source._stream is not None
        db.outbox.drop()  # the server ends (invalidates) the stream
        source.wait(1.0, stop)
        db.insert([("room", "r1", "MessagePosted", {"n": 1})])
        started = time.monotonic()
        source.wait(8.0, stop)
        assert time.monotonic() - started < 4, "not woken: the dead stream was not reopened"
    finally:
        source.close()


def test_health_and_status_report_an_unreachable_mongodb_source_in_one_line(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    config = tmp_path / "readmodel.toml"
    url = "mongodb://reader:s3cret@127.0.0.1:1,127.0.0.1:2/chat?serverSelectionTimeoutMS=300"
    store = pg_database()
    migrate_store(store)
    config.write_text(
        flat_toml({"store": {"url": store}, "sources.chat": {"url": url}}), encoding="utf-8"
    )
    for command in (["health"], ["status", "--json"]):
        result = run_cli([*command, "--config", str(config)])
        text = result.output + (result.stderr or "")
        assert "Traceback" not in text, text
        assert "s3cret" not in text
        if command == ["health"]:
            assert result.exit_code != 0 and "chat" in text
        else:
            assert result.exit_code == 3, text  # a database could not be reached
            report = json.loads(result.output[result.output.index("{") :])
            (chat_status,) = report["sources"]
            assert chat_status["engine"] == "mongodb" and chat_status["error"]


def test_wake_ups_for_documents_already_relayed_cause_no_empty_claims(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """Each insert's change event wakes the relay once; a claim takes every document there
    is, so the events of documents it already relayed must not wake it again."""
    url = mongo_database()
    settings = make_settings(
        pg_database(), {SOURCE: {"url": url, "poll_min": "5s", "poll_max": "5s"}}
    )
    init_outbox(settings.sources[SOURCE])
    claims: list[int] = []

    class Counting(MongoOutboxSource):
        def claim(self, limit: int) -> list[tuple[Any, ...]]:
            rows = super().claim(limit)
            claims.append(len(rows))
            return rows

    db = MongoOutboxDb(url)
    log = EventLog(settings.store.url)
    log.create_tables()
    relay = SourceRelay(Counting(SOURCE, settings.sources[SOURCE]), log)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    try:
        thread.start()
        wait_for(lambda: len(claims) >= 1, 10, "the first claim")
        time.sleep(0.3)
        with db.client.start_session() as session, session.start_transaction():
            db.outbox.insert_many(  # 100 documents at once: 100 change events
                [
                    {"seq": n, "id": f"e{n}", "aggregatetype": "room", "aggregateid": "r"}
                    | {"type": "MessagePosted", "payload": {"n": n}}
                    for n in range(1, 101)
                ],
                session=session,
            )
        wait_for(lambda: log.head(SOURCE) == 100, 10, "the documents")
        time.sleep(1.0)  # the 100 change events have arrived by now
    finally:
        stop.set()
        thread.join(timeout=30)
        log.close()
        db.close()
    empty_after_first = claims[1:].count(0)
    assert empty_after_first <= 2, claims


def test_marked_documents_without_a_numeric_seq_are_purged_after_retention(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """Mark mode: documents parked for want of a numeric ``seq`` are marked like the others,
    and the retention cleanup deletes them like the others (none stays behind)."""
    url = mongo_database()
    source = {"url": url, "on_dispatch": "mark", "retention": "0s"}
    settings = make_settings(pg_database(), {SOURCE: source})
    init_outbox(settings.sources[SOURCE])
    db = MongoOutboxDb(url)
    base = {"aggregatetype": "room", "aggregateid": "r1", "type": "MessagePosted"}
    db.outbox.insert_many(
        [
            {**base, "id": "e1", "seq": 1, "payload": {"n": 1}},
            {**base, "id": "e2", "payload": {"n": 2}},
            {**base, "id": "e3", "seq": "3", "payload": {"n": 3}},
            {**base, "id": "e4", "seq": 4, "payload": {"n": 4}},
        ]
    )
    relay = Relay(settings)
    try:
        totals = relay.drain()[SOURCE]
        assert (totals.relayed, totals.parked, totals.errors) == (2, 2, [])
        left = list(db.outbox.find({}, {"_id": 0, "id": 1}))
    finally:
        relay.close()
        db.close()
    assert left == []
