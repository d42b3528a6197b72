"""Operating the ``binary_ids`` rule the event log records: which names ``readmodel outbox
binary-ids`` takes, how a refused relay exits and logs, where a setting is said to come
from, what ``status``, ``health`` and ``migrate`` say about it. MariaDB sources, PostgreSQL
and SQLite logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from outbox.errors import BinaryIdsConflict
from outbox.log import EventLog
from outbox.log_rules import adopt_rule
from tests.binary_ids_helpers import (
    drain_svc,
    log_at_0002,
    log_records,
    outbox_row_count,
    recorded_rules_by_sql,
    rule_config,
    write_binary_events,
)
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import migrate_store
from tests.tenant_fixtures import REGISTRY_QUERY, make_registry


class UuidLogged(NamedTuple):
    """A BINARY(16) outbox whose log records ``uuid`` (one event relayed under it); ``new``
    configures the source with ``uuid``, ``old`` without binary_ids (``text``)."""

    engine: sa.Engine
    store: str
    new: Path
    old: Path


@pytest.fixture
def uuid_logged(
    binary_outbox: tuple[str, sa.Engine], pg_database: Callable[[], str], tmp_path: Path
) -> UuidLogged:
    url, engine = binary_outbox
    store = pg_database()
    new = rule_config(tmp_path, "new.toml", store, {"url": url, "binary_ids": "uuid"})
    old = rule_config(tmp_path, "old.toml", store, {"url": url})
    write_binary_events(engine, 1)
    assert drain_svc(new)[0].relayed == 1
    return UuidLogged(engine, store, new, old)


def _heads(store: str) -> dict[str, tuple[int, str | None]]:
    engine = create_engine(store)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT source, head, binary_ids FROM rm_log_heads").all()
    finally:
        engine.dispose()
    return {source: (head, rule) for source, head, rule in rows}


def test_the_switch_refuses_a_member_no_registry_lists_and_records_a_listed_one(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """A typo (``pos:acmee``) or a name that is no tenant id would be a head row, so a lane
    of every projection of the group for good: refused, nothing written. So is a tenant of
    a row that cannot be used (no relay of it runs; fixing the row may rename or drop it).
    A member the registry lists but the log has not seen gets the rule now, which its first
    relay must then have."""
    store = sqlite_database()
    migrate_store(store)
    log = EventLog(store)
    try:
        log.append("pos:acme", log_records(1, "acme"), binary_ids="hex")
    finally:
        log.close()
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    make_registry(
        registry,
        {
            "globex": f"sqlite:///{tmp_path}/globex.db",
            "acme": "sqlite:///acme.db",
            "initech": None,  # a bad row: no DSN
        },
    )
    config = write_config(
        tmp_path / "pos.toml",
        {
            "store": {"url": store},
            "tenants": {
                "pos": {"url": registry, "query": REGISTRY_QUERY, "source": {"binary_ids": "hex"}}
            },
        },
    )
    before = _heads(store)

    typo = run_cli(["outbox", "binary-ids", "pos:acmee", "hex", "-c", str(config), "-y"])
    nested = run_cli(["outbox", "binary-ids", "pos:a:b", "hex", "-c", str(config), "-y"])
    empty = run_cli(["outbox", "binary-ids", "pos:", "hex", "-c", str(config), "-y"])
    unusable = run_cli(["outbox", "binary-ids", "pos:initech", "hex", "-c", str(config), "-y"])

    assert typo.exit_code == 2, typo.output
    assert " ".join(typo.stderr.split()) == (
        "error: unknown source 'pos:acmee': tenant registry 'pos' lists no tenant 'acmee', "
        "and the event log has no such source (known: pos:acme, pos:globex)"
    )
    for result, tenant in ((nested, "a:b"), (empty, "")):
        assert result.exit_code == 2, result.output
        assert f"source 'pos:{tenant}': '{tenant}' is not a tenant id of registry 'pos'" in (
            " ".join(result.stderr.split())
        )
    assert unusable.exit_code == 2, unusable.output
    assert " ".join(unusable.stderr.split()) == (
        "error: source 'pos:initech': tenant registry 'pos' lists tenant 'initech' in a row "
        "readmodel cannot use (row 3: no DSN), so no relay of it runs: fix the row first, then "
        "record the rule"
    )
    assert _heads(store) == before == {"pos:acme": (1, "hex")}

    listed = run_cli(["outbox", "binary-ids", "pos:globex", "hex", "-c", str(config), "-y"])

    assert listed.exit_code == 0, listed.output
    assert " ".join(listed.stdout.split()) == (
        "pos:globex: binary_ids 'hex' recorded in the event log before the source's first "
        "event: a relay of it with another setting is refused"
    )
    assert _heads(store) == {"pos:acme": (1, "hex"), "pos:globex": (0, "hex")}
    engine = create_engine(store)
    try:
        with pytest.raises(BinaryIdsConflict):
            adopt_rule(engine, "pos:globex", "uuid")
    finally:
        engine.dispose()

    variable = "READMODEL_TENANTS__POS__SOURCE__BINARY_IDS"
    overridden = run_cli(
        ["outbox", "binary-ids", "pos:globex", "uuid", "-c", str(config), "-y"],
        env={variable: "hex"},
    )
    assert overridden.exit_code == 2
    assert (
        f"source 'pos:globex' is configured with binary_ids = 'hex' (environment variable "
        f"{variable}): set {variable}=uuid first"
    ) in " ".join(overridden.stderr.split())


def test_run_until_caught_up_exits_2_on_a_refusal_as_relay_once_does(
    uuid_logged: UuidLogged,
) -> None:
    engine, store, new, old = uuid_logged
    write_binary_events(engine, 2)

    result = run_cli(["run", "--until-caught-up", "--config", str(old)])

    assert result.exit_code == 2, result.output  # the config must change: not "unreachable"
    message = " ".join(result.stderr.split())
    assert message.startswith(
        f"error: source 'svc': binary_ids = 'text' ([sources.svc] in {old}) is not the rule "
        f"the event log records for it, 'uuid'"
    )
    assert "Nothing was relayed; the rows stay in the outbox" in message
    assert outbox_row_count(engine) == 2


def test_a_setting_from_an_environment_variable_is_named_as_such(
    uuid_logged: UuidLogged,
) -> None:
    """``old.toml`` has no binary_ids: the refused setting comes from the variable, which
    the messages name instead of crediting the file."""
    engine, store, new, old = uuid_logged
    variable = "READMODEL_SOURCES__SVC__BINARY_IDS"

    relayed = run_cli(["relay", "--once", "-c", str(old)], env={variable: "hex"})
    switched = run_cli(
        ["outbox", "binary-ids", "svc", "uuid", "-c", str(old)], env={variable: "hex"}
    )

    assert relayed.exit_code == 2, relayed.output
    message = " ".join(relayed.stderr.split())
    assert (
        f"source 'svc': binary_ids = 'hex' (environment variable {variable}) is not the rule "
        f"the event log records for it, 'uuid'"
    ) in message
    assert f"Set {variable}=uuid, as every relay of the source must have it" in message
    assert "in old.toml)" not in message
    assert switched.exit_code == 2, switched.output
    assert " ".join(switched.stderr.split()) == (
        f"error: source 'svc' is configured with binary_ids = 'hex' (environment variable "
        f"{variable}): set {variable}=uuid first, and in the config of every relay of the "
        f"source (a relay whose setting is not the recorded rule is refused)"
    )
    assert recorded_rules_by_sql(store) == {"svc": "uuid"}


def test_health_fails_and_status_shows_a_config_whose_relays_are_refused(
    uuid_logged: UuidLogged,
) -> None:
    engine, store, new, old = uuid_logged

    healthy = run_cli(["health", "-c", str(new)])
    unhealthy = run_cli(["health", "-c", str(old)])
    as_json = run_cli(["status", "--json", "-c", str(old)])
    table = run_cli(["status", "-c", str(old)], env={"COLUMNS": "200"})
    agreeing = run_cli(["status", "--json", "-c", str(new)])

    assert healthy.exit_code == 0, healthy.output
    assert unhealthy.exit_code == 1, unhealthy.output
    assert " ".join(unhealthy.stderr.split()) == (
        f"unhealthy: source svc: relays refused: binary_ids = 'text' ([sources.svc] in {old}) "
        "is not the rule the event log records, 'uuid', so nothing is relayed (set binary_ids "
        f'= "uuid" in [sources.svc] in {old}, or switch the rule: readmodel outbox binary-ids '
        "svc text)"
    )
    assert as_json.exit_code == 0, as_json.output
    [source] = json.loads(as_json.stdout)["sources"]
    assert (source["binary_ids"], source["binary_ids_config"], source["binary_ids_conflict"]) == (
        "uuid",
        "text",
        True,
    )
    [source] = json.loads(agreeing.stdout)["sources"]
    assert (source["binary_ids"], source["binary_ids_config"], source["binary_ids_conflict"]) == (
        "uuid",
        "uuid",
        False,
    )
    assert table.exit_code == 0, table.output
    assert "uuid (config: text, refused)" in table.stdout


def test_health_names_the_environment_variable_that_set_a_refused_binary_ids(
    uuid_logged: UuidLogged,
) -> None:
    variable = "READMODEL_SOURCES__SVC__BINARY_IDS"

    unhealthy = run_cli(["health", "-c", str(uuid_logged.new)], env={variable: "hex"})

    assert unhealthy.exit_code == 1, unhealthy.output
    assert " ".join(unhealthy.stderr.split()) == (
        f"unhealthy: source svc: relays refused: binary_ids = 'hex' (environment variable "
        f"{variable}) is not the rule the event log records, 'uuid', so nothing is relayed "
        f"(set {variable}=uuid, or switch the rule: readmodel outbox binary-ids svc hex)"
    )


def test_migrate_to_recorded_rules_notes_what_the_first_relay_of_a_logged_source_does(
    pg_database: Callable[[], str], sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    stores = {"events": pg_database(), "empty": pg_database(), "fresh": sqlite_database()}
    log_at_0002(stores["events"], events=True)
    log_at_0002(stores["empty"], events=False)
    results = {}
    for name, store in stores.items():
        config = write_config(tmp_path / f"{name}.toml", {"store": {"url": store}})
        results[name] = (config, run_cli(["migrate", "--config", str(config)]))

    config, upgraded = results["events"]
    assert upgraded.exit_code == 0, upgraded.output
    assert " ".join(upgraded.stdout.split()).endswith(
        "note: the event log holds events of svc from before readmodel recorded each "
        "source's binary_ids rule: the first relay of each source will record its binary_ids "
        "setting as the rule, and relays with another are refused from then on. If a "
        "source's events were relayed with another binary_ids than its config has now, "
        "record the rule they were relayed with before relaying, with a config that has it: "
        f"readmodel outbox binary-ids SOURCE RULE --config {config}"
    )
    for name in ("empty", "fresh"):
        assert results[name][1].exit_code == 0, results[name][1].output
        assert "migrated from revision" in results[name][1].stdout
        assert "note:" not in results[name][1].output
    again = run_cli(["migrate", "--config", str(config)])
    assert "already at revision" in again.stdout and "note:" not in again.output
