"""The event log records each source's ``binary_ids`` rule: a relay with another setting
(an old config during a deploy) is refused and relays nothing, its rows waiting in the
outbox; only ``readmodel outbox binary-ids`` switches the rule. MariaDB sources, a
PostgreSQL log (and SQLite for the log's own checks)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from config import load_settings
from outbox.log import SMALL_APPEND, EventLog
from outbox.relay import Relay, drain_source
from outbox.rows import MalformedRow
from tests.binary_ids_helpers import (
    USERS,
    drain_svc,
    insert_outbox_rows,
    log_at_0002,
    log_records,
    outbox_row_count,
    recorded_rules_by_sql,
    rule_config,
    write_binary_events,
)
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import migrate_store

REFUSED = "not relaying the source: its binary_ids is not the rule the log records"


def test_the_first_relay_records_its_rule_and_status_shows_it(
    binary_outbox: tuple[str, sa.Engine], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url, engine = binary_outbox
    store = pg_database()
    config = rule_config(tmp_path, "new.toml", store, {"url": url, "binary_ids": "uuid"})
    write_binary_events(engine, 3)

    totals, logged = drain_svc(config)

    assert (totals.errors, totals.relayed) == ([], 3)
    assert {e.aggregate_id for e in logged} == {str(u) for u in USERS}
    assert recorded_rules_by_sql(store) == {"svc": "uuid"}
    status = run_cli(["status", "--json", "--config", str(config)])
    assert status.exit_code == 0, status.output
    [source] = json.loads(status.stdout)["sources"]
    assert (source["source"], source["log_head"], source["binary_ids"]) == ("svc", 3, "uuid")
    table = run_cli(["status", "--config", str(config)])
    assert "binary ids" in table.stdout and "uuid" in table.stdout


def test_a_relay_with_another_setting_is_refused_and_relays_nothing(
    binary_outbox: tuple[str, sa.Engine], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """A rolling deploy: the new config (``uuid``) relayed first; a relay still on the old
    config (the default ``text``) must not take the next rows under its rule."""
    url, engine = binary_outbox
    store = pg_database()
    new = rule_config(tmp_path, "new.toml", store, {"url": url, "binary_ids": "uuid"})
    old = rule_config(tmp_path, "old.toml", store, {"url": url})
    write_binary_events(engine, 2)
    assert drain_svc(new)[0].relayed == 2
    write_binary_events(engine, 3)

    refused = run_cli(["relay", "--once", "--config", str(old)])

    assert refused.exit_code == 2, refused.output  # a configuration problem, not a failure
    message = " ".join(refused.stderr.split())
    assert (
        f"source 'svc': binary_ids = 'text' ([sources.svc] in {old}) is not the rule the "
        f"event log records for it, 'uuid'"
    ) in message
    assert "Nothing was relayed; the rows stay in the outbox" in message
    assert 'Set binary_ids = "uuid" there' in message
    assert f"run `readmodel outbox binary-ids svc text --config {old}`" in message
    assert "svc: relayed 0, duplicates 0, parked 0" in refused.stdout
    assert outbox_row_count(engine) == 3
    totals, logged = drain_svc(new)  # the right rule relays them, in order
    assert (totals.errors, totals.relayed) == ([], 3)
    assert [e.payload["n"] for e in logged] == [0, 1, 0, 1, 2]
    assert {e.aggregate_id for e in logged} == {str(u) for u in USERS}
    assert recorded_rules_by_sql(store) == {"svc": "uuid"}


def test_the_switch_refuses_the_leader_under_the_old_rule_and_the_new_relay_runs(
    binary_outbox: tuple[str, sa.Engine], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """The leader checked the rule when it took the lead; ``outbox binary-ids`` switches it
    while it leads: its next append is refused (the check is part of every append), and a
    relay with the new setting then relays the rows."""
    url, engine = binary_outbox
    store = pg_database()
    old = rule_config(tmp_path, "old.toml", store, {"url": url, "binary_ids": "uuid"})
    new = rule_config(tmp_path, "new.toml", store, {"url": url, "binary_ids": "hex"})
    write_binary_events(engine, 2)
    relay = Relay(load_settings(old))
    try:
        leader = relay.relays[0]
        assert leader.drain().relayed == 2  # stays the leader

        switched = run_cli(["outbox", "binary-ids", "svc", "hex", "--config", str(new), "--yes"])
        assert switched.exit_code == 0, switched.output
        assert switched.stdout.strip() == (
            "svc: binary_ids switched from 'uuid' to 'hex' in the event log: events logged "
            "from now on are keyed by 'hex'"
        )
        write_binary_events(engine, 2)
        totals = drain_source(leader)

        assert (totals.relayed, totals.refused) == (2, True)  # the 2 of the first drain
        assert "binary_ids = 'uuid' ([sources.svc] in" in totals.errors[0]
        assert "the event log records for it, 'hex'" in totals.errors[0]
        assert len(relay.log.read("svc")) == 2
    finally:
        relay.close()
    assert outbox_row_count(engine) == 2

    totals, logged = drain_svc(new)

    assert (totals.errors, totals.relayed) == ([], 2)
    assert [e.aggregate_id for e in logged[2:]] == [USERS[0].hex, USERS[1].hex]
    assert recorded_rules_by_sql(store) == {"svc": "hex"}


def test_a_running_relay_refused_waits_and_relays_once_the_rule_is_switched_to_its_own(
    binary_outbox: tuple[str, sa.Engine], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """``readmodel relay`` (not --once) started with another setting: it logs the refusal
    as an error once (its retries at debug level), relays nothing, and keeps trying; once
    the operator records its rule, it relays."""
    url, engine = binary_outbox
    store = pg_database()
    first = rule_config(tmp_path, "first.toml", store, {"url": url, "binary_ids": "uuid"})
    second = rule_config(tmp_path, "second.toml", store, {"url": url, "binary_ids": "hex"})
    write_binary_events(engine, 1)
    assert drain_svc(first)[0].relayed == 1
    write_binary_events(engine, 2)
    relay = Relay(load_settings(second))
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    try:
        with capture_logs() as logs:
            thread.start()
            assert _wait(lambda: sum(e["event"] == REFUSED for e in logs) >= 4)  # 0.5, 1, 2 s
            assert outbox_row_count(engine) == 2 and relay.log.head("svc") == 1
            refusals = [e for e in logs if e["event"] == REFUSED]
            switched = run_cli(["outbox", "binary-ids", "svc", "hex", "-c", str(second), "-y"])
            assert switched.exit_code == 0, switched.output
            assert _wait(lambda: relay.log.head("svc") == 3)
            logged = relay.log.read("svc", after=1)
    finally:
        stop.set()
        thread.join(30)
        relay.close()
    # logged as an error once, its retries at debug level
    assert [e["log_level"] for e in refusals] == ["error"] + ["debug"] * (len(refusals) - 1)
    assert [e for e in logs if e["log_level"] == "error"] == refusals[:1]
    refusal = refusals[0]
    assert (refusal["source"], refusal["binary_ids"], refusal["recorded"]) == ("svc", "hex", "uuid")
    assert outbox_row_count(engine) == 0
    assert [e.aggregate_id for e in logged] == [u.hex for u in USERS]


def _wait(condition: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_switch_command_refuses_a_config_that_says_otherwise(
    binary_outbox: tuple[str, sa.Engine], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url, engine = binary_outbox
    store = pg_database()
    config = rule_config(tmp_path, "auth.toml", store, {"url": url, "binary_ids": "uuid"})
    write_binary_events(engine, 1)
    assert drain_svc(config)[0].relayed == 1

    unchanged = run_cli(["outbox", "binary-ids", "svc", "hex", "--config", str(config)])
    unknown = run_cli(["outbox", "binary-ids", "nope", "uuid", "--config", str(config)])
    wrong = run_cli(["outbox", "binary-ids", "svc", "base64", "--config", str(config)])
    again = run_cli(["outbox", "binary-ids", "svc", "uuid", "--config", str(config)])

    assert unchanged.exit_code == 2
    assert " ".join(unchanged.stderr.split()) == (
        f"error: source 'svc' is configured with binary_ids = 'uuid' ([sources.svc] in "
        f'{config}): set binary_ids = "hex" there first, and in the config of every relay of '
        f"the source (a relay whose setting is not the recorded rule is refused)"
    )
    assert unknown.exit_code == 2 and "unknown source 'nope' (known: svc)" in unknown.stderr
    assert wrong.exit_code == 2 and "'base64' is not a binary_ids rule" in wrong.stderr
    assert again.exit_code == 0, again.output  # no switch, so no confirmation asked
    assert "svc: binary_ids is already 'uuid' in the event log; nothing changed" in again.stdout
    assert recorded_rules_by_sql(store) == {"svc": "uuid"}


def test_the_switch_asks_before_re_keying(
    binary_outbox: tuple[str, sa.Engine], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url, engine = binary_outbox
    store = pg_database()
    old = rule_config(tmp_path, "old.toml", store, {"url": url, "binary_ids": "uuid"})
    new = rule_config(tmp_path, "new.toml", store, {"url": url, "binary_ids": "hex"})
    write_binary_events(engine, 1)
    assert drain_svc(old)[0].relayed == 1

    unasked = run_cli(["outbox", "binary-ids", "svc", "hex", "--config", str(new)])

    assert unasked.exit_code == 2
    assert "refusing to switch without confirmation: pass --yes" in unasked.stderr
    assert recorded_rules_by_sql(store) == {"svc": "uuid"}


def test_an_upgraded_log_records_the_first_relays_setting_and_keeps_its_events(
    binary_outbox: tuple[str, sa.Engine], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """A log at revision 0002 holding events that an older readmodel relayed (ids read as
    text, what it always did): after the upgrade no rule is recorded, the first relay
    records its own setting (``text``, the default) and appends after the old events, and a
    relay with another setting is refused from then on."""
    url, engine = binary_outbox
    store = pg_database()
    log_at_0002(store, events=True)
    insert_outbox_rows(
        engine, [(b"evt-000000000002", "user", b"user-00000000042", "UserDeactivated", {"n": 1})]
    )
    config = rule_config(tmp_path, "upgraded.toml", store, {"url": url})

    with capture_logs() as logs:
        totals, logged = drain_svc(config)

    assert (totals.errors, totals.relayed) == ([], 1)
    assert [(e.position, e.event_id, e.aggregate_id) for e in logged] == [
        (1, "evt-000000000001", "user-00000000042"),
        (2, "evt-000000000002", "user-00000000042"),
    ]
    assert recorded_rules_by_sql(store) == {"svc": "text"}
    [adopted] = [e for e in logs if e["event"].startswith("binary_ids rule recorded")]
    assert (adopted["binary_ids"], adopted["log_head"]) == ("text", 1)
    write_binary_events(engine, 1)
    uuids = rule_config(tmp_path, "uuids.toml", store, {"url": url, "binary_ids": "uuid"})
    refused, _ = drain_svc(uuids)
    assert (refused.relayed, refused.refused) == (0, True)
    assert "records for it, 'text'" in refused.errors[0]
    assert outbox_row_count(engine) == 1


@pytest.mark.parametrize(
    ("log_kind", "count"),
    [("postgresql", 2), ("postgresql", SMALL_APPEND + 1), ("sqlite", 2)],
    ids=["pg-one-statement", "pg-copy", "sqlite"],
)
def test_every_append_path_records_the_rule_and_refuses_another(
    log_kind: str,
    count: int,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> None:
    from outbox.errors import BinaryIdsConflict
    from outbox.log_rules import recorded_rules

    store = pg_database() if log_kind == "postgresql" else sqlite_database()
    migrate_store(store)
    log = EventLog(store)
    try:
        log.append("svc", log_records(1, "first"), binary_ids="uuid")  # records the rule
        assert log.append("svc", log_records(count, "more"), binary_ids="uuid").head == count + 1

        with pytest.raises(BinaryIdsConflict) as raised:
            log.append("svc", log_records(count, "other"), binary_ids="text")
        with pytest.raises(BinaryIdsConflict):
            log.append(
                "svc", [], [MalformedRow(9, "bad", "missing event type", {})], binary_ids="text"
            )

        assert (raised.value.setting, raised.value.recorded) == ("text", "uuid")
        assert log.head("svc") == count + 1
        assert [e.event_id for e in log.read("svc")][-1] == f"more-{count - 1}"
        assert log.parked_outbox_count("svc") == 0
        log.append("svc", log_records(1, "untold"))  # no rule given (a MongoDB source): no check
        assert log.head("svc") == count + 2
        # Rows parked under a rule key no aggregate: the rule is recorded with the first event.
        bad = MalformedRow(9, "bad", "not valid UTF-8", {})
        assert log.append("parked", [], [bad], binary_ids="text").parked == 1
        assert recorded_rules(log.engine) == {"svc": "uuid"}
        assert log.append("parked", log_records(count, "p"), binary_ids="uuid").head == count
        assert recorded_rules(log.engine) == {"svc": "uuid", "parked": "uuid"}
    finally:
        log.close()


def test_a_registry_group_switches_every_member_the_log_has(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """``[tenants.pos]`` members share ``[tenants.pos.source]``'s ``binary_ids``: the group's
    name switches each member in the log; a member's name switches that one."""
    store = sqlite_database()
    migrate_store(store)
    log = EventLog(store)
    try:
        for source in ("pos:acme", "pos:globex", "auth"):
            log.append(source, log_records(1, source), binary_ids="uuid")
    finally:
        log.close()
    config = write_config(
        tmp_path / "pos.toml",
        {
            "store": {"url": store},
            "tenants": {
                "pos": {
                    "url": f"sqlite:///{tmp_path / 'registry.db'}",
                    "source": {"binary_ids": "hex"},
                }
            },
        },
    )

    one = run_cli(["outbox", "binary-ids", "pos:acme", "hex", "-c", str(config), "-y"])
    group = run_cli(["outbox", "binary-ids", "pos", "hex", "-c", str(config), "-y"])

    assert one.exit_code == 0, one.output
    assert group.exit_code == 0, group.output
    assert group.stdout.splitlines() == [
        "pos:acme: binary_ids is already 'hex' in the event log; nothing changed",
        "pos:globex: binary_ids switched from 'uuid' to 'hex' in the event log: events logged "
        "from now on are keyed by 'hex'",
    ]
    assert recorded_rules_by_sql(store) == {"pos:acme": "hex", "pos:globex": "hex", "auth": "uuid"}
