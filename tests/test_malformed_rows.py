"""Malformed outbox rows are parked with their reason and raw content; the rest flow on."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import Settings
from outbox.db import create_engine
from outbox.parking import ParkedEvents
from outbox.relay import Relay
from tests.cli_helpers import run_cli, write_config

MAX_PAYLOAD = 256


@dataclass(frozen=True)
class Row:
    """One outbox row to insert; ``reason`` is None for a good row, else part of the reason."""

    aggregate_type: Any
    aggregate_id: Any
    event_type: Any
    payload: Any
    reason: str | None = None
    timestamp: Any = None
    headers: Any = None


def good(n: int, **extra: Any) -> Row:
    return Row("order", f"o{n % 3}", "OrderPlaced", json.dumps({"n": n}), **extra)


def bad(reason: str, *, payload: Any = '{"ok": true}', **fields: Any) -> Row:
    values = {"aggregate_type": "order", "aggregate_id": "o1", "event_type": "OrderPlaced"}
    values.update(fields)
    return Row(payload=payload, reason=reason, **values)


OVERSIZED = json.dumps({"blob": "x" * (MAX_PAYLOAD + 10)})

TEXT_ROWS = [
    good(1),
    bad("(column 'payload') is not valid JSON", payload="not json at all"),
    bad("(column 'payload') is not valid JSON", payload='{"unterminated": '),
    good(2),
    bad("(column 'payload') is a JSON array, expected an object", payload="[1, 2, 3]"),
    bad("(column 'payload') is a JSON number, expected an object", payload="42"),
    bad("missing aggregate id (column 'aggregateid' is NULL)", aggregate_id=None),
    bad("missing aggregate id (column 'aggregateid' is empty)", aggregate_id=""),
    bad("missing aggregate id (column 'aggregateid' is empty)", aggregate_id="   "),
    good(3),
    bad("missing event type (column 'type' is NULL)", event_type=None),
    bad("missing event type (column 'type' is empty)", event_type=""),
    bad("missing aggregate type (column 'aggregatetype' is NULL)", aggregate_type=None),
    bad("missing payload (column 'payload' is NULL)", payload=None),
    bad(
        f"payload is {len(OVERSIZED)} bytes, above max_payload_bytes = {MAX_PAYLOAD}",
        payload=OVERSIZED,
    ),
    good(4),
    bad("(column 'payload') contains \\u0000", payload='{"a": "nul \\u0000 here"}'),
    # An escaped backslash followed by "u0000" is ordinary text, not a NUL: it must flow on.
    Row("order", "o1", "OrderPlaced", '{"n": 5, "path": "C:\\\\u0000dir"}'),
    bad("timestamp (column 'timestamp') is not ISO 8601: '[/]'", timestamp="[/]"),
    bad("timestamp (column 'timestamp') is out of range", timestamp="0001-01-01T00:00:00+14:00"),
    bad("headers (column 'headers') is not valid JSON", headers="{oops"),
    bad("headers (column 'headers') is a JSON array, expected an object", headers="[]"),
    good(6, timestamp="2024-05-17T10:00:00Z", headers='{"correlation_id": "c-6"}'),
]

SQLITE_ONLY_ROWS = [
    bad("(column 'payload') contains a NUL character", payload='{"a": "\x00"}'),
    bad("(column 'payload') is not valid UTF-8", payload=b'{"a": "\xff\xfe"}'),
    bad("aggregate id (column 'aggregateid') contains a NUL character", aggregate_id="o\x001"),
    Row("order", "o2", "OrderPlaced", b'{"n": 7}'),
    good(8),
]

BYTEA_ROWS = [
    Row("order", "o1", "OrderPlaced", b'{"n": 1}'),
    bad("(column 'payload') is not valid UTF-8", payload=b"\xff\xfe\xfd"),
    bad("(column 'payload') contains a NUL character", payload=b'{"a": "\x00"}'),
    Row("order", "o2", "OrderPlaced", '{"n": 2, "name": "Zoë"}'.encode()),
    bad("(column 'payload') is not valid JSON", payload=b"<html>not json</html>"),
    bad("(column 'payload') is a JSON array, expected an object", payload=b"[]"),
    Row("order", "o3", "OrderPlaced", b'{"n": 3}'),
]


@dataclass
class Setup:
    settings: Settings
    source_db: sa.Engine
    rows: list[Row]
    inserted_seqs: list[int]


def _insert(engine: sa.Engine, rows: list[Row], with_extras: bool) -> list[int]:
    columns = ["aggregatetype", "aggregateid", "type", "payload"]
    if with_extras:
        columns += ["timestamp", "headers"]
    table = sa.table("outbox", *[sa.column(c) for c in columns], sa.column("seq"))
    seqs = []
    with engine.begin() as conn:
        for row in rows:
            values = [row.aggregate_type, row.aggregate_id, row.event_type, row.payload]
            if with_extras:
                values += [row.timestamp, row.headers]
            statement = sa.insert(table).values(dict(zip(columns, values, strict=True)))
            seqs.append(conn.execute(statement.returning(table.c.seq)).scalar_one())
    return seqs


@contextmanager
def _setup(
    source_url: str,
    store_url: str,
    ddl: str,
    rows: list[Row],
    make_settings: Callable[..., Settings],
) -> Iterator[Setup]:
    engine = create_engine(source_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
        seqs = _insert(engine, rows, with_extras="headers" in ddl)
        settings = make_settings(
            store_url,
            {"svc": {"url": source_url, "batch_size": 4, "max_payload_bytes": MAX_PAYLOAD}},
        )
        yield Setup(settings, engine, rows, seqs)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite-text", "postgres-text", "postgres-bytea"])
def setup(
    request: pytest.FixtureRequest,
    sqlite_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> Iterator[Setup]:
    if request.param == "sqlite-text":
        ddl = (
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, aggregatetype TEXT, "
            "aggregateid TEXT, type TEXT, payload TEXT, timestamp TEXT, headers TEXT)"
        )
        rows = TEXT_ROWS + SQLITE_ONLY_ROWS
        with _setup(sqlite_database(), sqlite_database(), ddl, rows, make_settings) as made:
            yield made
    elif request.param == "postgres-text":
        ddl = (
            "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, aggregatetype TEXT, "
            "aggregateid TEXT, type TEXT, payload TEXT, timestamp TEXT, headers TEXT)"
        )
        url = pg_database()  # the outbox and the read store share one database here
        with _setup(url, url, ddl, TEXT_ROWS, make_settings) as made:
            yield made
    else:
        ddl = (
            "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, aggregatetype TEXT, "
            "aggregateid TEXT, type TEXT, payload BYTEA)"
        )
        url = pg_database()
        with _setup(url, url, ddl, BYTEA_ROWS, make_settings) as made:
            yield made


def _good_payloads(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if row.reason is None:
            payload = row.payload
            out.append(json.loads(payload.decode() if isinstance(payload, bytes) else payload))
    return out


def _expected_raw_payload(payload: Any) -> Any:
    if isinstance(payload, bytes):
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            return {"$base64": base64.b64encode(payload).decode()}
        return text if "\x00" not in text else {"$base64": base64.b64encode(payload).decode()}
    if isinstance(payload, str):
        return payload.replace("\x00", "\\u0000")
    return payload


def test_malformed_rows_are_parked_and_good_rows_flow_in_order(
    setup: Setup, tmp_path: Path
) -> None:
    relay = Relay(setup.settings)
    try:
        totals = relay.drain()["svc"]
        logged = relay.log.read("svc")
        parked_rows = relay.log.parked_outbox_count("svc")
        with relay.log.engine.connect() as conn:
            parked = conn.execute(
                sa.text(
                    "SELECT kind, source, event_id, reason, raw, status FROM rm_parked ORDER BY id"
                )
            ).all()
    finally:
        relay.close()

    bad_rows = [
        (row, seq) for row, seq in zip(setup.rows, setup.inserted_seqs, strict=True) if row.reason
    ]
    assert totals.errors == []
    assert (totals.relayed, totals.parked) == (len(setup.rows) - len(bad_rows), len(bad_rows))
    # Good rows reach the log in outbox order, at gap-free positions.
    assert [e.payload for e in logged] == _good_payloads(setup.rows)
    assert [e.position for e in logged] == list(range(1, len(logged) + 1))
    # Every bad row is parked with its reason and its raw content, in outbox order.
    assert parked_rows == len(parked) == len(bad_rows)
    for (row, seq), (kind, source, event_id, reason, raw, status) in zip(
        bad_rows, parked, strict=True
    ):
        raw = json.loads(raw) if isinstance(raw, str) else raw
        assert (kind, source, status, event_id) == ("outbox_row", "svc", "parked", None)
        assert row.reason is not None and row.reason in reason, (row, reason)
        assert raw["seq"] == seq
        assert raw["aggregateid"] == _expected_raw_payload(row.aggregate_id)
        assert raw["type"] == row.event_type
        assert raw["payload"] == _expected_raw_payload(row.payload)
    # Nothing is left pending and nothing vanished.
    with setup.source_db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one() == 0
    assert len(logged) + len(parked) == len(setup.rows)

    _check_parked_cli(setup, tmp_path)


def _check_parked_cli(setup: Setup, tmp_path: Path) -> None:
    """``readmodel parked list`` and ``parked show`` report exactly the parked rows."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "store": {"url": setup.settings.store.url},
            "sources": {"svc": {"url": setup.settings.sources["svc"].url}},
        },
    )
    bad_rows = [
        (row, seq) for row, seq in zip(setup.rows, setup.inserted_seqs, strict=True) if row.reason
    ]

    listed = run_cli(["parked", "list", "--config", str(config), "--json"])

    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.stdout)
    assert len(entries) == len(bad_rows)
    for (row, seq), entry in zip(bad_rows, entries, strict=True):
        assert row.reason is not None and row.reason in entry["reason"]
        assert (entry["kind"], entry["source"], entry["status"]) == ("outbox_row", "svc", "parked")
        assert entry["raw"]["seq"] == seq
        assert entry["raw"]["payload"] == _expected_raw_payload(row.payload)
    assert len({entry["id"] for entry in entries}) == len(entries)

    limited = run_cli(["parked", "list", "--config", str(config), "--json", "--limit", "2"])
    assert [e["id"] for e in json.loads(limited.stdout)] == [e["id"] for e in entries[:2]]
    other = run_cli(["parked", "list", "--config", str(config), "--json", "--source", "nope"])
    assert json.loads(other.stdout) == []

    # `parked show` on the first entry and on every one whose raw bytes were kept as base64.
    shown_rows = [0] + [i for i, e in enumerate(entries) if isinstance(e["raw"]["payload"], dict)]
    for i in shown_rows:
        (row, seq), entry = bad_rows[i], entries[i]
        shown = run_cli(["parked", "show", str(entry["id"]), "--config", str(config)])
        assert shown.exit_code == 0, shown.output
        detail = json.loads(shown.stdout)
        assert detail["id"] == entry["id"]
        assert detail["reason"] == entry["reason"]
        assert detail["raw"]["seq"] == seq
        assert detail["raw"]["payload"] == _expected_raw_payload(row.payload)
        if isinstance(row.aggregate_id, str) and "\x00" not in row.aggregate_id:
            assert detail["aggregate_id"] == row.aggregate_id
            assert detail["aggregate_type"] == row.aggregate_type
        if isinstance(row.payload, bytes) and isinstance(detail["raw"]["payload"], dict):
            assert base64.b64decode(detail["raw"]["payload"]["$base64"]) == row.payload

    table = run_cli(["parked", "list", "--config", str(config)])
    assert table.exit_code == 0, table.output
    assert "outbox_row" in table.stdout
    assert table.stdout.count("outbox_row") == len(bad_rows)

    missing = run_cli(["parked", "show", "999999", "--config", str(config)])
    assert missing.exit_code == 1
    assert "no parked entry with id 999999" in missing.stderr

    # `parked skip` on an outbox row: out of the list, kept with --all as skipped, once.
    first = entries[0]["id"]
    skipped = run_cli(["parked", "skip", str(first), "--config", str(config)])
    assert skipped.exit_code == 0, skipped.output
    assert f"{first}: skipped" in skipped.stdout
    after = json.loads(run_cli(["parked", "list", "--config", str(config), "--json"]).stdout)
    assert [e["id"] for e in after] == [e["id"] for e in entries[1:]]
    everything = run_cli(["parked", "list", "--all", "--config", str(config), "--json"])
    statuses = {e["id"]: e["status"] for e in json.loads(everything.stdout)}
    assert statuses[first] == "skipped"
    again = run_cli(["parked", "skip", str(first), "--config", str(config)])
    assert again.exit_code == 1 and f"no parked entry {first}" in again.stderr


def test_markup_like_reason_is_shown_verbatim(
    sqlite_database: Callable[[], str], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    ddl = (
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, aggregatetype TEXT, "
        "aggregateid TEXT, type TEXT, payload TEXT, timestamp TEXT, headers TEXT)"
    )
    rows = [bad("not ISO 8601: '[/]'", timestamp="[/]"), bad("not ISO", timestamp="[bold]x")]
    with _setup(sqlite_database(), sqlite_database(), ddl, rows, make_settings) as setup:
        relay = Relay(setup.settings)
        try:
            assert relay.drain()["svc"].parked == 2
        finally:
            relay.close()
        config = write_config(
            tmp_path / "rm.toml",
            {
                "store": {"url": setup.settings.store.url},
                "sources": {"svc": {"url": setup.settings.sources["svc"].url}},
            },
        )

        result = run_cli(["parked", "list", "--config", str(config)])

        assert result.exit_code == 0, result.output
        assert "'[/]'" in result.stdout
        assert "[bold]x" in result.stdout


def test_invalid_utf8_text_in_sqlite_is_parked(
    sqlite_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    source_url = sqlite_database()
    ddl = (
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, aggregatetype TEXT, "
        "aggregateid TEXT, type TEXT, payload TEXT)"
    )
    with _setup(source_url, sqlite_database(), ddl, [good(1)], make_settings) as setup:
        with setup.source_db.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                "VALUES ('order', 'o1', 'OrderPlaced', CAST(x'7b2261223a22ff227d' AS TEXT))"
            )
        _insert(setup.source_db, [good(2)], with_extras=False)
        relay = Relay(setup.settings)
        try:
            totals = relay.drain()["svc"]
            assert totals.errors == []
            assert [e.payload for e in relay.log.read("svc")] == [{"n": 1}, {"n": 2}]
            assert relay.log.parked_outbox_count("svc") == 1
        finally:
            relay.close()


def test_infinite_timestamp_in_postgres_is_parked(
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    ddl = (
        "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, aggregatetype TEXT, "
        "aggregateid TEXT, type TEXT, payload JSONB, timestamp TIMESTAMPTZ)"
    )
    with _setup(pg_database(), sqlite_database(), ddl, [], make_settings) as setup:
        with setup.source_db.begin() as conn:
            for stamp in ("2024-01-01T00:00:00Z", "infinity", "2024-01-02T00:00:00Z"):
                conn.exec_driver_sql(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, timestamp) "
                    "VALUES ('order', 'o1', 'OrderPlaced', '{}', %s)",
                    (stamp,),
                )
        relay = Relay(setup.settings)
        try:
            totals = relay.drain()["svc"]
            assert totals.errors == []
            assert relay.log.head("svc") == 2
            assert relay.log.parked_outbox_count("svc") == 1
        finally:
            relay.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_event_id_reused_after_a_sequence_restart_is_parked_not_dropped(
    kind: str,
    sqlite_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """Without an event_id column, ids derive from the outbox position (``svc:<seq>``): after
    the sequence restarts, new events get ids the log has seen. They must not be taken for
    redeliveries and skipped; a true redelivery (same event, same id) still is."""
    if kind == "sqlite":
        url, store = sqlite_database(), sqlite_database()
        ddl = (
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, aggregatetype TEXT, "
            "aggregateid TEXT, type TEXT, payload TEXT)"
        )
        restart = "DELETE FROM sqlite_sequence WHERE name = 'outbox'"
    else:
        url = store = pg_database()
        ddl = (
            "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, aggregatetype TEXT, "
            "aggregateid TEXT, type TEXT, payload TEXT)"
        )
        restart = "ALTER SEQUENCE outbox_seq_seq RESTART WITH 1"
    first = [good(1), good(2), good(3)]
    with _setup(url, store, ddl, first, make_settings) as made:
        relay = Relay(made.settings)
        try:
            assert relay.drain()["svc"].relayed == 3
            with made.source_db.begin() as conn:
                conn.exec_driver_sql(restart)
            reused = [Row("order", "o9", "OrderPaid", json.dumps({"n": 10})), good(11)]
            assert _insert(made.source_db, reused, with_extras=False) == [1, 2]
            with made.source_db.begin() as conn:  # event 3 delivered again, as it was
                conn.exec_driver_sql(
                    "INSERT INTO outbox (seq, aggregatetype, aggregateid, type, payload) "
                    f"VALUES (3, 'order', 'o0', 'OrderPlaced', '{first[2].payload}')"
                )
            totals = relay.drain()["svc"]
            logged = relay.log.read("svc")
            with relay.log.engine.connect() as conn:
                parked = conn.execute(
                    sa.text("SELECT event_id, reason, raw FROM rm_parked ORDER BY id")
                ).all()
        finally:
            relay.close()
        with made.source_db.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one() == 0

    # cumulative: the first drain's 3; then 2 parked and event 3 recognised as a redelivery
    assert (totals.relayed, totals.duplicates, totals.parked, totals.errors) == (3, 1, 2, [])
    assert [e.payload for e in logged] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [p.event_id for p in parked] == ["svc:1", "svc:2"]
    assert "'svc:1' is already in the log (log position 1)" in parked[0].reason
    assert "OrderPlaced of order:o1" in parked[0].reason and "sequence restarts" in parked[0].reason
    raws = [json.loads(p.raw) if isinstance(p.raw, str) else p.raw for p in parked]
    assert [(r["event_type"], r["aggregate_id"], r["payload"]) for r in raws] == [
        ("OrderPaid", "o9", {"n": 10}),
        ("OrderPlaced", "o2", {"n": 11}),
    ]


def test_odd_values_no_check_foresaw_are_parked_or_read_as_meant(
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """A NaN epoch timestamp is parked (it crashed the relay and blocked the outbox); JSON
    null headers are no headers; an empty tenant takes the source's default."""
    ddl = (
        "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, aggregatetype TEXT, "
        "aggregateid TEXT, type TEXT, payload JSONB, timestamp NUMERIC, tenant_id TEXT, "
        "headers JSONB)"
    )
    with _setup(pg_database(), sqlite_database(), ddl, [], make_settings) as setup:
        with setup.source_db.begin() as conn:
            for stamp, tenant, headers in (
                (1_700_000_000, "", "null"),
                ("NaN", "t1", None),
                (1_700_000_001, None, '{"correlation_id": "c1"}'),
            ):
                conn.exec_driver_sql(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, timestamp, "
                    "tenant_id, headers) VALUES ('order', 'o1', 'OrderPlaced', '{}', %s, %s, %s)",
                    (stamp, tenant, headers),
                )
        source = setup.settings.sources["svc"].model_copy(update={"tenant": "acme"})
        relay = Relay(setup.settings.model_copy(update={"sources": {"svc": source}}))
        try:
            totals = relay.drain()["svc"]
            assert totals.errors == []
            logged = relay.log.read("svc")
            assert [(e.tenant, e.headers) for e in logged] == [
                ("acme", {}),
                ("acme", {"correlation_id": "c1"}),
            ]
            parked = ParkedEvents(relay.log.engine).list(source="svc")
            assert [p.reason for p in parked] == [
                "timestamp (column 'timestamp') is out of range: NaN"
            ]
            with setup.source_db.connect() as conn:
                assert conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one() == 0
        finally:
            relay.close()


def test_a_binary_id_with_zero_bytes_is_parked_and_the_rows_after_it_flow(
    mysql_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """A MySQL BINARY(16) id (MariaDB's UUID() bytes hold 0x00) is no text: the row is
    parked with its id escaped (PostgreSQL text cannot hold NUL), the next row is relayed."""
    ddl = (
        "CREATE TABLE outbox (seq BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, "
        "id BINARY(16) NOT NULL, aggregatetype VARCHAR(50), aggregateid VARCHAR(50), "
        "type VARCHAR(50), payload JSON)"
    )
    with _setup(mysql_database(), pg_database(), ddl, [], make_settings) as setup:
        with setup.source_db.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES "
                "(UNHEX('4F8A89B2E97F11F1827502FC00000001'), 'user', 'u1', 'Registered', '{}'), "
                "('plain-text-id-02', 'user', 'u2', 'Registered', '{}')"
            )
        relay = Relay(setup.settings)
        try:
            totals = relay.drain()["svc"]
            assert totals.errors == [] and totals.parked == 1
            assert [(e.event_id, e.aggregate_id) for e in relay.log.read("svc")] == [
                ("plain-text-id-02", "u2")
            ]
            parked = ParkedEvents(relay.log.engine).list(source="svc")
            assert len(parked) == 1 and "\\x00" in parked[0].event_id
            assert "not valid UTF-8" in parked[0].reason
            assert 'set binary_ids = "uuid" in [sources.svc]' in parked[0].reason
        finally:
            relay.close()


def test_a_database_per_tenant_source_gives_every_row_its_tenant(
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """With ``columns.tenant = ""`` the source's tenant is every row's, whatever a tenant
    column of the table claims; without it, the source's tenant only fills empty ones."""
    ddl = (
        "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, aggregatetype TEXT, "
        "aggregateid TEXT, type TEXT, payload JSONB, tenant_id TEXT)"
    )
    with _setup(pg_database(), sqlite_database(), ddl, [], make_settings) as setup:
        with setup.source_db.begin() as conn:
            for tenant in (None, "t1"):
                conn.exec_driver_sql(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, tenant_id) "
                    "VALUES ('order', 'o1', 'OrderPlaced', '{}', %s)",
                    (tenant,),
                )
        base = setup.settings.sources["svc"]
        seen = []
        for columns in ({"tenant": ""}, {}):
            source = base.model_copy(
                update={"tenant": "t2", "columns": base.columns.model_copy(update=columns)}
            )
            relay = Relay(setup.settings.model_copy(update={"sources": {"svc": source}}))
            try:
                before = len(relay.log.read("svc"))
                with setup.source_db.begin() as conn:  # the same two rows again
                    conn.exec_driver_sql(
                        "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, "
                        "tenant_id) SELECT 'order', 'o1', 'OrderPlaced', '{}', t FROM "
                        "(VALUES (NULL), ('t1')) v(t) WHERE %s",
                        (before > 0,),
                    )
                relay.drain()
                seen.append([e.tenant for e in relay.log.read("svc")][before:])
            finally:
                relay.close()
    assert seen == [["t2", "t2"], ["t2", "t1"]]
