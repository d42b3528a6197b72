"""The reference system's chat service on MongoDB and its ``conversation_inbox`` document
projection: a reproducible chat workload, the read model across the chat and auth sources,
``verify`` against the chat service's own data, and a config without chat."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from config import load_settings
from outbox.mongo_connection import mongo_database as database_name
from outbox.relay import Relay
from projections.reference.chat_service import NO_CHAT
from projections.reference.conversation_inbox import INBOX, NOTIFICATIONS, USERS
from projections.reference.simulate import Simulator
from tests.chat_helpers import chat_documents, chat_settings, config_data, documents
from tests.cli_helpers import run_cli, write_config
from tests.reference_helpers import SERVICES, reference_settings, service_rows
from workers.runtime import build_runtime
from workers.worker import run_until_caught_up

USERS_COUNT, ORDERS_COUNT = 40, 120


def _services(make: Callable[[], str]) -> dict[str, str]:
    return {name: make() for name in SERVICES}


def test_the_chat_workload_is_reproducible_and_leaves_the_shop_as_without_chat(
    sqlite_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    runs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    results = {}
    for label, seed, with_chat in (("a", 7, True), ("b", 7, True), ("c", 7, False), ("d", 8, True)):
        services = _services(sqlite_database)
        chat = mongo_database()
        if with_chat:
            settings = chat_settings(sqlite_database(), services, chat, mongo_database())
        else:
            settings = reference_settings(sqlite_database(), services)
        results[label] = Simulator(settings, seed=seed).run(USERS_COUNT, ORDERS_COUNT)
        runs[label] = (service_rows(services), chat_documents(chat))

    (shop_a, chat_a), (shop_b, chat_b), (shop_c, chat_c), (shop_d, chat_d) = (
        runs[k] for k in "abcd"
    )
    assert chat_a == chat_b, "two runs with the same seed wrote different chat documents"
    assert shop_a == shop_c, "the chat part changed what the shop's services hold"
    assert chat_c == {"conversations": [], "messages": [], "notifications": []}
    assert results["c"].notes == [NO_CHAT] and results["a"].notes == []
    assert {m["_id"] for m in chat_a["messages"]}.isdisjoint(m["_id"] for m in chat_d["messages"])

    a = results["a"]
    conversations, messages = chat_a["conversations"], chat_a["messages"]
    assert len(conversations) == a.actions["start_conversation"] == USERS_COUNT // 4
    assert len(messages) == len(conversations) + a.actions["reply"] == len(conversations) + 60
    shipped = [n for n in chat_a["notifications"] if n["kind"] == "order_shipped"]
    assert len(shipped) == a.actions["ship"] == a.actions["notify_shipped"]
    assert {n["kind"] for n in chat_a["notifications"]} == {"order_shipped", "new_message"}
    # every participant and sender is a user the auth service knows
    known = {row[0] for row in shop_a["auth.users"]}
    assert {u for c in conversations for u in c["participant_ids"]} <= known
    assert {m["sender_id"] for m in messages} <= known
    # each conversation's messages are numbered 1..n, as its message_count says
    for conversation in conversations:
        numbers = sorted(
            m["number"] for m in messages if m["conversation_id"] == conversation["_id"]
        )
        assert numbers == list(range(1, conversation["message_count"] + 1))
    assert a.events["chat"] == len(messages) + len(chat_a["notifications"])


def test_conversation_inbox_follows_both_sources_and_verify_finds_no_mismatch(
    sqlite_database: Callable[[], str],
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> None:
    """Messages relayed before their participants' registrations show no names yet; once
    the auth service is relayed every conversation shows each participant's current name
    and e-mail, and verify agrees with the chat and auth services."""
    docs = mongo_database()
    settings = chat_settings(pg_database(), _services(sqlite_database), mongo_database(), docs)
    result = Simulator(settings, seed=11).run(USERS_COUNT, ORDERS_COUNT)
    runtime = build_runtime(settings)
    try:
        chat_relay = Relay(settings, sources=["chat"], log=runtime.log)
        assert chat_relay.drain()["chat"].relayed == result.events["chat"]
        runtime.engine.catch_up()
        inbox = documents(docs, INBOX)[INBOX]
        assert len(inbox) == result.actions["start_conversation"]
        names = {p["name"] for d in inbox for p in d["participants"]}
        assert names == {None}  # auth not relayed yet

        run_until_caught_up(runtime)
        inbox = documents(docs, INBOX)[INBOX]
        assert all(p["name"] and "@" in p["email"] for d in inbox for p in d["participants"])
        store = runtime.engine.store_of("conversation_inbox")
        indexes = store.database[INBOX].index_information().values()  # type: ignore[attr-defined]
        assert (("participant_ids", 1),) in [tuple(i["key"]) for i in indexes]
        assert sum(d["message_count"] for d in inbox) == sum(
            result.actions[k] for k in ("start_conversation", "reply")
        )
    finally:
        runtime.close()

    from workers.reference import run_verify

    report, behind = run_verify(settings)
    assert behind == "" and report.ok, report.as_dict()
    checked = {name: p.checked for name, p in report.projections.items()}
    assert checked[INBOX] == result.actions["start_conversation"]
    assert checked[NOTIFICATIONS] > 0 and checked["order_summary"] == ORDERS_COUNT


def test_verify_names_planted_mismatches_in_conversation_inbox(
    sqlite_database: Callable[[], str],
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    docs = mongo_database()
    settings = chat_settings(pg_database(), _services(sqlite_database), mongo_database(), docs)
    config = write_config(tmp_path / "chat.toml", config_data(settings))
    for command in (["migrate"], ["reference", "init"]):
        done = run_cli([*command, "--config", str(config)])
        assert done.exit_code == 0, done.output
    simulate = ["simulate", "--config", str(config), "--users", "30", "--orders", "80"]
    assert run_cli([*simulate, "--seed", "3"]).exit_code == 0
    ran = run_cli(["run", "--until-caught-up", "--config", str(config)])
    assert ran.exit_code == 0, ran.output
    clean = run_cli(["verify", "--config", str(config), "--json"])
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["projections"][INBOX]["checked"] > 0

    client: MongoClient[dict[str, Any]] = MongoClient(docs, tz_aware=True)
    try:
        database = client[database_name(docs)]
        unread = database[INBOX].find_one(sort=[("_id", 1)])
        assert unread is not None
        database[INBOX].update_one({"_id": unread["_id"]}, {"$inc": {"participants.0.unread": 1}})
        feed = database[NOTIFICATIONS].find_one(sort=[("_id", 1)])
        assert feed is not None
        database[NOTIFICATIONS].delete_one({"_id": feed["_id"]})
        database[INBOX].insert_one(
            {"_id": "no-such-conversation", "participants": [], "message_count": 1}
        )
    finally:
        client.close()

    planted = run_cli(["verify", "--config", str(config)])
    assert planted.exit_code == 1
    assert unread["_id"][:18] in planted.stdout and "no-such-conversati" in planted.stdout
    as_json = run_cli(["verify", "--config", str(config), "--json"])
    assert as_json.exit_code == 1
    found = {
        (m["projection"], m["key"], m["kind"]): m["columns"]
        for p in json.loads(as_json.stdout)["projections"].values()
        for m in p["examples"]
    }
    assert set(found) == {
        (INBOX, unread["_id"], "differs"),
        (NOTIFICATIONS, feed["_id"], "missing"),
        (INBOX, "no-such-conversation", "unexpected"),
    }
    differs = found[(INBOX, unread["_id"], "differs")]
    assert list(differs) == ["participants.0.unread"]
    assert differs["participants.0.unread"]["actual"] == unread["participants"][0]["unread"] + 1


def test_applying_the_whole_log_again_leaves_every_document_as_it_was(
    sqlite_database: Callable[[], str],
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> None:
    """Every lane's checkpoint set back to 0: the workers apply the same log a second time
    (a redelivery of everything), and the documents stay exactly as they were."""
    docs = mongo_database()
    settings = chat_settings(pg_database(), _services(sqlite_database), mongo_database(), docs)
    Simulator(settings, seed=23).run(USERS_COUNT, ORDERS_COUNT)
    runtime = build_runtime(settings)
    try:
        run_until_caught_up(runtime)
        before = documents(docs, INBOX, NOTIFICATIONS)
        client: MongoClient[dict[str, Any]] = MongoClient(docs)
        try:
            reset = client[database_name(docs)]["rm_checkpoints"].update_many(
                {"projection": "conversation_inbox"}, {"$set": {"position": 0}}
            )
        finally:
            client.close()
        assert reset.modified_count > 0
        applied = runtime.engine.catch_up(["conversation_inbox"])
        assert applied > 0
        assert documents(docs, INBOX, NOTIFICATIONS) == before
        users = documents(docs, USERS)[USERS]
        assert all(u["name"] for u in users)
    finally:
        runtime.close()

    from workers.reference import run_verify

    report, _ = run_verify(settings)
    assert report.ok, report.as_dict()


def test_verify_reads_the_generation_a_replay_swapped_in(
    sqlite_database: Callable[[], str],
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    """README "Document projections": a rebuild of ``conversation_inbox`` fills the next
    generation (``conversation_inbox__g1``) and drops the old one; verify then compares the
    services with the generation in use, not with the dropped ``conversation_inbox``."""
    docs = mongo_database()
    settings = chat_settings(pg_database(), _services(sqlite_database), mongo_database(), docs)
    result = Simulator(settings, seed=29).run(USERS_COUNT, ORDERS_COUNT)
    runtime = build_runtime(settings)
    try:
        run_until_caught_up(runtime)
    finally:
        runtime.close()
    config = write_config(tmp_path / "readmodel.toml", config_data(settings))
    args = ["replay", "conversation_inbox", "--yes", "--retire-after", "0", "--config"]
    done = run_cli([*args, str(config)])
    assert done.exit_code == 0, done.output
    client: MongoClient[dict[str, Any]] = MongoClient(docs)
    try:
        names = set(client[database_name(docs)].list_collection_names())
    finally:
        client.close()
    assert {f"{INBOX}__g1", f"{NOTIFICATIONS}__g1"} <= names
    assert INBOX not in names and NOTIFICATIONS not in names  # generation 0 is dropped

    from workers.reference import run_verify

    report, behind = run_verify(settings)
    assert behind == "" and report.ok, report.as_dict()
    assert report.projections[INBOX].checked == result.actions["start_conversation"]
    assert report.projections[NOTIFICATIONS].checked > 0


def test_reference_init_creates_the_chat_indexes_and_prints_them(
    sqlite_database: Callable[[], str], mongo_database: Callable[[], str], tmp_path: Path
) -> None:
    chat = mongo_database()
    settings = chat_settings(sqlite_database(), _services(sqlite_database), chat, mongo_database())
    config = write_config(tmp_path / "chat.toml", config_data(settings))
    printed = run_cli(["reference", "init", "--config", str(config), "--print"])
    assert printed.exit_code == 0, printed.output
    assert "-- service chat" in printed.stdout
    assert (
        "db.getCollection('messages').createIndex({'conversation_id': 1, 'number': 1}, "
        "{unique: true})" in printed.stdout
    )
    assert "db.getCollection('outbox').createIndex({'seq': 1}, {unique: true})" in printed.stdout

    for _ in range(2):  # idempotent
        applied = run_cli(["reference", "init", "--config", str(config)])
        assert applied.exit_code == 0, applied.output
        assert "chat: 4 indexes ensured" in applied.stdout
    client: MongoClient[dict[str, Any]] = MongoClient(chat)
    try:
        database = client[database_name(chat)]
        indexes = {
            name: {tuple(spec["key"]): bool(spec.get("unique")) for spec in info.values()}
            for name in ("messages", "notifications", "outbox")
            for info in [database[name].index_information()]
        }
    finally:
        client.close()
    assert indexes["messages"][(("conversation_id", 1), ("number", 1))] is True
    assert indexes["notifications"][(("user_id", 1), ("number", 1))] is True
    assert indexes["outbox"][(("seq", 1),)] is True


def test_without_a_chat_source_simulate_init_and_verify_say_they_skip_chat(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    settings = reference_settings(sqlite_database(), _services(sqlite_database))
    config = write_config(
        tmp_path / "shop.toml",
        {k: v for k, v in config_data(settings).items() if k != "stores"},
    )
    init = run_cli(["reference", "init", "--config", str(config)])
    assert init.exit_code == 0 and NO_CHAT in init.stdout
    printed = run_cli(["reference", "init", "--config", str(config), "--print"])
    assert f"-- {NO_CHAT}" in printed.stdout
    simulated = run_cli(["simulate", "--config", str(config), "--users", "5", "--orders", "5"])
    assert simulated.exit_code == 0 and NO_CHAT in simulated.stdout
    for command in (["migrate"], ["run", "--until-caught-up"]):
        done = run_cli([*command, "--config", str(config)])
        assert done.exit_code == 0, done.output
    verified = run_cli(["verify", "--config", str(config)])
    assert verified.exit_code == 0, verified.output
    assert NO_CHAT in verified.stdout
    as_json = json.loads(run_cli(["verify", "--config", str(config), "--json"]).stdout)
    assert as_json["notes"] == [NO_CHAT] and INBOX not in as_json["projections"]


def test_a_chat_source_that_is_not_mongodb_is_a_config_error(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    services = {**_services(sqlite_database), "chat": sqlite_database()}
    settings = load_settings(
        None,
        store={"url": sqlite_database()},
        sources={name: {"url": url} for name, url in services.items()},
    )
    config = write_config(tmp_path / "bad.toml", config_data(settings))
    result = run_cli(["simulate", "--config", str(config), "--users", "1", "--orders", "1"])
    assert result.exit_code == 2
    assert "sources.chat: the reference chat service runs on MongoDB" in result.stderr
