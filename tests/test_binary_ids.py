"""Binary id columns (MySQL/MariaDB ``BINARY(16)``, PostgreSQL ``bytea``): read as UTF-8 text
by default (as before ``binary_ids`` existed), as UUID text or hex when a source opts in,
decided per column from its declared type, never per value."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from config import Settings
from outbox.db import create_engine
from outbox.relay import Relay
from tests.binary_ids_helpers import MYSQL_OUTBOX, insert_outbox_rows, run_ddl

UUIDS = {"binary_ids": "uuid"}


def _drain(settings: Settings) -> tuple[Any, list[Any], list[Any]]:
    relay = Relay(settings)
    try:
        totals = relay.drain()["svc"]
        logged = relay.log.read("svc")
        with relay.log.engine.connect() as conn:
            parked = conn.execute(
                sa.text("SELECT event_id, aggregate_id, reason, raw FROM rm_parked ORDER BY id")
            ).all()
    finally:
        relay.close()
    return totals, logged, parked


def test_binary16_ids_are_relayed_as_uuid_text_in_aggregate_order(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="BINARY(16)", aggregate_type="BINARY(16)"))
    users = [uuid.uuid4() for _ in range(3)]
    events = [uuid.uuid4() for _ in range(12)]
    rows = [
        (event.bytes, "user", users[n % 3].bytes, "UserEmailChanged", {"n": n})
        for n, event in enumerate(events)
    ]
    # Ids made by the server, as services write them; MariaDB has no UUID_TO_BIN.
    with engine.begin() as conn:
        server_id, server_user = conn.exec_driver_sql("SELECT UUID(), UUID()").one()
        conn.exec_driver_sql(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES "
            "(UNHEX(REPLACE(%s, '-', '')), 'user', UNHEX(REPLACE(%s, '-', '')), "
            "'UserRegistered', '{\"n\": 12}')",
            (server_id, server_user),
        )
    insert_outbox_rows(engine, rows)

    totals, logged, parked = _drain(make_settings(pg_database(), {"svc": UUIDS | {"url": url}}))

    assert (totals.errors, totals.relayed, totals.parked, parked) == ([], 13, 0, [])
    assert (logged[0].event_id, logged[0].aggregate_id) == (server_id, server_user)
    assert [e.event_id for e in logged[1:]] == [str(e) for e in events]
    assert [e.aggregate_id for e in logged[1:]] == [str(users[n % 3]) for n in range(12)]
    for user in users:
        ours = [e for e in logged if e.aggregate_id == str(user)]
        assert [e.payload["n"] for e in ours] == sorted(e.payload["n"] for e in ours)
        assert len(ours) == 4
    # The same aggregate always has the same id text, hence the same partition hash.
    relayed_again = _relay_one_more(url, engine, users[0], pg_database, make_settings)
    assert relayed_again == str(users[0])


def _relay_one_more(
    url: str,
    engine: sa.Engine,
    user: uuid.UUID,
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> str:
    """The aggregate id a fresh relay (a fresh source, reading the table's types again)
    gives one more event of ``user``."""
    insert_outbox_rows(
        engine, [(uuid.uuid4().bytes, "user", user.bytes, "UserDeactivated", {"n": 99})]
    )
    _, logged, _ = _drain(make_settings(pg_database(), {"svc": UUIDS | {"url": url}}))
    assert len(logged) == 1
    return str(logged[0].aggregate_id)


def test_wrong_length_binary_id_is_parked_with_column_and_row(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="BINARY(16)", aggregate_type="VARBINARY(16)"))
    user = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(5)]
    insert_outbox_rows(
        engine,
        [
            (ids[0].bytes, "user", user.bytes, "UserRegistered", {"n": 0}),
            (ids[1].bytes, "user", user.bytes[:15], "UserRegistered", {"n": 1}),
            (ids[2].bytes, "user", user.bytes, "UserEmailChanged", {"n": 2}),
            # Text that happens to be valid UTF-8 is still not a UUID: the column decides.
            (ids[3].bytes, "user", b"user-42", "UserRegistered", {"n": 3}),
            (ids[4].bytes, "user", user.bytes, "UserDeactivated", {"n": 4}),
        ],
    )
    with engine.connect() as conn:
        seqs = conn.exec_driver_sql("SELECT seq FROM outbox ORDER BY seq").scalars().all()

    totals, logged, parked = _drain(make_settings(pg_database(), {"svc": UUIDS | {"url": url}}))

    assert (totals.errors, totals.relayed, totals.parked) == ([], 3, 2)
    assert [e.payload["n"] for e in logged] == [0, 2, 4]
    assert {e.aggregate_id for e in logged} == {str(user)}
    assert [e.event_id for e in logged] == [str(ids[0]), str(ids[2]), str(ids[4])]
    assert len(parked) == 2
    for (event_id, _, reason, raw), seq, length, n in zip(
        parked, (seqs[1], seqs[3]), (15, 7), (1, 3), strict=True
    ):
        raw = json.loads(raw) if isinstance(raw, str) else raw
        assert event_id == str(ids[n])
        assert f"aggregate id (column 'aggregateid', row seq = {seq}) is {length} bytes" in reason
        assert "not 16" in reason
        assert raw["seq"] == seq


def test_row_parked_for_another_reason_keeps_its_binary_ids_as_uuid_text(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url, engine = mysql_source_db
    run_ddl(
        engine,
        MYSQL_OUTBOX.format(id_type="BINARY(16)", aggregate_type="BINARY(16)").replace(
            "type VARCHAR(255) NOT NULL", "type VARCHAR(255) NULL"
        ),
    )
    event, user = uuid.uuid4(), uuid.uuid4()
    insert_outbox_rows(engine, [(event.bytes, "user", user.bytes, None, {"n": 1})])

    totals, logged, parked = _drain(make_settings(pg_database(), {"svc": UUIDS | {"url": url}}))

    assert (totals.relayed, totals.parked, logged) == (0, 1, [])
    event_id, aggregate_id, reason, _ = parked[0]
    assert (event_id, aggregate_id) == (str(event), str(user))
    assert "missing event type" in reason


def test_text_and_wider_binary_id_columns_are_read_as_text(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="CHAR(36)", aggregate_type="VARBINARY(64)"))
    event = uuid.uuid4()
    insert_outbox_rows(
        engine, [(str(event), "user", b"user-1234567890ab", "UserRegistered", {"n": 1})]
    )

    totals, logged, _ = _drain(make_settings(pg_database(), {"svc": {"url": url}}))

    assert (totals.relayed, totals.parked) == (1, 0)
    assert (logged[0].event_id, logged[0].aggregate_id) == (str(event), "user-1234567890ab")


@pytest.mark.parametrize(
    ("binary_ids", "expected"),
    [("uuid", "uuid"), ("hex", "hex")],
)
def test_bytea_id_columns_follow_binary_ids(
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    binary_ids: str,
    expected: str,
) -> None:
    url = pg_database()
    engine = create_engine(url)
    try:
        run_ddl(
            engine,
            "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, id BYTEA NOT NULL, "
            "aggregatetype TEXT NOT NULL, aggregateid BYTEA NOT NULL, type TEXT NOT NULL, "
            "payload JSONB NOT NULL)",
        )
        event, order = uuid.uuid4(), uuid.uuid4()
        insert_outbox_rows(
            engine,
            [
                (event.bytes, "order", order.bytes, "OrderPlaced", {"n": 1}),
                (uuid.uuid4().bytes, "order", order.bytes[:8], "OrderPaid", {"n": 2}),
            ],
        )
    finally:
        engine.dispose()
    settings = make_settings(url, {"svc": {"url": url, "binary_ids": binary_ids}})

    totals, logged, parked = _drain(settings)

    if expected == "uuid":
        assert (totals.relayed, totals.parked) == (1, 1)
        assert (logged[0].event_id, logged[0].aggregate_id) == (str(event), str(order))
        assert "aggregate id (column 'aggregateid', row seq = 2) is 8 bytes" in parked[0][2]
    else:
        assert (totals.relayed, totals.parked) == (2, 0)
        assert (logged[0].event_id, logged[0].aggregate_id) == (event.hex, order.hex)
        assert logged[1].aggregate_id == order.bytes[:8].hex()


def test_bytea_id_columns_are_text_by_default(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    """Without ``binary_ids``, ``bytea`` is read as UTF-8, as before."""
    url = pg_database()
    engine = create_engine(url)
    try:
        run_ddl(
            engine,
            "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL, "
            "aggregatetype TEXT NOT NULL, aggregateid BYTEA NOT NULL, type TEXT NOT NULL, "
            "payload JSONB NOT NULL)",
        )
        insert_outbox_rows(engine, [("e-1", "order", b"order-1234567890", "OrderPlaced", {"n": 1})])
    finally:
        engine.dispose()

    totals, logged, _ = _drain(make_settings(url, {"svc": {"url": url}}))

    assert totals.relayed == 1
    assert logged[0].aggregate_id == "order-1234567890"


@pytest.mark.parametrize("explicit", [False, True], ids=["default", "binary_ids-text"])
def test_binary16_columns_holding_text_ids_are_read_as_utf8_by_default(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    explicit: bool,
) -> None:
    """What readmodel did before ``binary_ids``: a BINARY(16) / VARBINARY(16) id column
    holding text ids (16 characters or fewer) relays them as they are."""
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="BINARY(16)", aggregate_type="VARBINARY(16)"))
    insert_outbox_rows(
        engine,
        [
            (b"evt-000000000001", "user", b"user-42", "UserRegistered", {"n": 1}),
            (b"evt-000000000002", "order", b"ORD-000000000001", "OrderPlaced", {"n": 2}),
        ],
    )
    config = {"url": url} | ({"binary_ids": "text"} if explicit else {})

    totals, logged, parked = _drain(make_settings(pg_database(), {"svc": config}))

    assert (totals.errors, totals.relayed, totals.parked, parked) == ([], 2, 0, [])
    assert [(e.event_id, e.aggregate_id) for e in logged] == [
        ("evt-000000000001", "user-42"),
        ("evt-000000000002", "ORD-000000000001"),
    ]


def test_binary16_uuids_read_as_text_are_parked_suggesting_binary_ids_uuid(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="CHAR(36)", aggregate_type="BINARY(16)"))
    user = uuid.UUID("0b9a5e2c-7f3d-4f6e-9c1a-2d4b6e8f0a1c")  # no valid UTF-8
    insert_outbox_rows(
        engine,
        [
            (str(uuid.uuid4()), "user", user.bytes, "UserRegistered", {"n": 1}),
            (str(uuid.uuid4()), "user", b"user-00000000042", "UserRegistered", {"n": 2}),
        ],
    )

    totals, logged, parked = _drain(make_settings(pg_database(), {"svc": {"url": url}}))

    assert (totals.relayed, totals.parked) == (1, 1)
    assert logged[0].aggregate_id == "user-00000000042"
    reason = parked[0][2]
    assert "aggregate id (column 'aggregateid') is not valid UTF-8" in reason
    assert 'the column is BINARY(16): if it holds binary UUIDs, set binary_ids = "uuid"' in reason
    assert "in [sources.svc]" in reason


def test_a_rule_unchanged_by_the_upgrade_keeps_a_redelivered_event_one_event(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """An event relayed by an older readmodel (UTF-8, ``binary_ids = "text"`` now) whose
    acknowledgement was lost is relayed again by this one with the default: the same event
    id, so a duplicate, not a second event of another aggregate id."""
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="BINARY(16)", aggregate_type="BINARY(16)"))
    run_ddl(engine, "ALTER TABLE outbox ADD COLUMN dispatched_at DATETIME(6) NULL")
    insert_outbox_rows(
        engine, [(b"evt-000000000001", "order", b"ORD-000000000001", "OrderPlaced", {})]
    )
    store = pg_database()
    source = {"url": url, "on_dispatch": "mark", "columns": {"dispatched_at": "dispatched_at"}}
    before, _, _ = _drain(make_settings(store, {"svc": source | {"binary_ids": "text"}}))
    with engine.begin() as conn:  # the acknowledgement lost (a crash between the commits)
        conn.exec_driver_sql("UPDATE outbox SET dispatched_at = NULL")

    after, logged, _ = _drain(make_settings(store, {"svc": source}))

    assert (before.relayed, after.relayed, after.duplicates) == (1, 0, 1)
    assert [(e.event_id, e.aggregate_id) for e in logged] == [
        ("evt-000000000001", "ORD-000000000001")
    ]


def test_uuid_swapped_reads_mysql_time_swapped_uuids(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="BINARY(16)", aggregate_type="BINARY(16)"))
    # MySQL's manual: UUID_TO_BIN('6ccd780c-baba-1026-9564-5b8c656024db', 1)
    swapped = bytes.fromhex("1026BABA6CCD780C95645B8C656024DB")
    event = uuid.uuid1()
    event_swapped = event.bytes[6:8] + event.bytes[4:6] + event.bytes[0:4] + event.bytes[8:]
    insert_outbox_rows(engine, [(event_swapped, "user", swapped, "UserRegistered", {"n": 1})])
    settings = make_settings(pg_database(), {"svc": {"url": url, "binary_ids": "uuid-swapped"}})

    totals, logged, parked = _drain(settings)

    assert (totals.errors, totals.relayed, parked) == ([], 1, [])
    assert logged[0].aggregate_id == "6ccd780c-baba-1026-9564-5b8c656024db"
    assert logged[0].event_id == str(event)


@pytest.mark.parametrize("binary_ids", ["uuid", "uuid-swapped", "hex"])
def test_binary_ids_with_no_binary_id_column_is_refused_naming_the_columns(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    binary_ids: str,
) -> None:
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="CHAR(36)", aggregate_type="VARCHAR(64)"))
    insert_outbox_rows(engine, [(str(uuid.uuid4()), "user", "user-42", "UserRegistered", {"n": 1})])
    settings = make_settings(pg_database(), {"svc": {"url": url, "binary_ids": binary_ids}})

    totals, logged, parked = _drain(settings)

    assert (totals.relayed, logged, parked) == (0, [], [])
    [error] = totals.errors
    assert f"source 'svc': binary_ids = '{binary_ids}' ([sources.svc])" in error
    assert "no id column of 'outbox' is binary (id is CHAR(36), aggregateid is VARCHAR(64))" in (
        error
    )
    with engine.connect() as conn:  # nothing consumed
        assert conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar() == 1


def test_a_domain_over_bytea_follows_binary_ids(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    url = pg_database()
    engine = create_engine(url)
    try:
        run_ddl(engine, "CREATE DOMAIN uuid_bytes AS bytea CHECK (length(VALUE) = 16)")
        run_ddl(
            engine,
            "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, id uuid_bytes NOT NULL, "
            "aggregatetype TEXT NOT NULL, aggregateid uuid_bytes NOT NULL, type TEXT NOT NULL, "
            "payload JSONB NOT NULL)",
        )
        event, order = uuid.uuid4(), uuid.uuid4()
        insert_outbox_rows(engine, [(event.bytes, "order", order.bytes, "OrderPlaced", {"n": 1})])
    finally:
        engine.dispose()

    totals, logged, parked = _drain(make_settings(url, {"svc": UUIDS | {"url": url}}))

    assert (totals.errors, totals.relayed, parked) == ([], 1, [])
    assert (logged[0].event_id, logged[0].aggregate_id) == (str(event), str(order))


def test_a_running_relay_rereads_the_rule_after_alter_table(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """A service migrates its id columns while the relay runs: the event id from CHAR(36)
    to BINARY(16), the aggregate id from BINARY(16) to CHAR(36) (its UUID text). The relay's
    next claim sees values of the other type, reads the types again and relays them: the
    aggregate keeps its id, nothing is parked."""
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="CHAR(36)", aggregate_type="BINARY(16)"))
    user = uuid.uuid4()
    first = uuid.uuid4()
    insert_outbox_rows(engine, [(str(first), "user", user.bytes, "UserRegistered", {"n": 0})])
    relay = Relay(make_settings(pg_database(), {"svc": UUIDS | {"url": url}}))
    try:
        source_relay = relay.relays[0]  # stays the leader, its column types read once
        with capture_logs() as logs:
            assert source_relay.drain().relayed == 1
        assert [e["binary_ids"] for e in logs if e["event"] == "leading source"] == ["uuid"]
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE outbox ADD COLUMN id2 BINARY(16), ADD COLUMN agg2 CHAR(36)"
            )
            conn.exec_driver_sql(
                "UPDATE outbox SET id2 = UNHEX(REPLACE(id, '-', '')), "
                "agg2 = LOWER(CONCAT_WS('-', HEX(SUBSTR(aggregateid, 1, 4)), "
                "HEX(SUBSTR(aggregateid, 5, 2)), HEX(SUBSTR(aggregateid, 7, 2)), "
                "HEX(SUBSTR(aggregateid, 9, 2)), HEX(SUBSTR(aggregateid, 11, 6))))"
            )
            conn.exec_driver_sql("ALTER TABLE outbox DROP COLUMN id, DROP COLUMN aggregateid")
            conn.exec_driver_sql(
                "ALTER TABLE outbox CHANGE id2 id BINARY(16) NOT NULL, "
                "CHANGE agg2 aggregateid CHAR(36) NOT NULL"
            )
        events = [uuid.uuid4() for _ in range(3)]
        insert_outbox_rows(
            engine,
            [
                (e.bytes, "user", str(user), "UserEmailChanged", {"n": n})
                for n, e in enumerate(events)
            ],
        )

        with capture_logs() as logs:
            totals = source_relay.drain()

        assert (totals.errors, totals.relayed, totals.parked) == ([], 4, 0)
        assert [e for e in logs if e["event"] == "id column types changed: binary_ids rule re-read"]
        logged = relay.log.read("svc")
        assert [e.event_id for e in logged] == [str(first), *map(str, events)]
        assert {e.aggregate_id for e in logged} == {str(user)}
    finally:
        relay.close()
        source_relay.source.close()


def test_rows_parked_under_text_are_relayed_after_switching_to_uuid_and_unmarking(
    mysql_source_db: tuple[str, sa.Engine],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """The README's way back for rows parked by the default before ``binary_ids = "uuid"``
    was set (``on_dispatch = "mark"``): clear their mark, skip the parked entries."""
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="BINARY(16)", aggregate_type="BINARY(16)"))
    run_ddl(engine, "ALTER TABLE outbox ADD COLUMN dispatched_at DATETIME(6) NULL")
    user = uuid.UUID("0b9a5e2c-7f3d-4f6e-9c1a-2d4b6e8f0a1c")
    events = [uuid.UUID(int=(0xFF << 120) + n) for n in range(3)]  # 0xff: no UTF-8
    insert_outbox_rows(
        engine,
        [(e.bytes, "user", user.bytes, "UserEmailChanged", {"n": n}) for n, e in enumerate(events)],
    )
    store = pg_database()
    source = {"url": url, "on_dispatch": "mark", "columns": {"dispatched_at": "dispatched_at"}}
    before, _, parked = _drain(make_settings(store, {"svc": source}))
    assert (before.relayed, before.parked) == (0, 3)
    seqs = [(json.loads(raw) if isinstance(raw, str) else raw)["seq"] for *_, raw in parked]

    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE outbox SET dispatched_at = NULL WHERE seq IN :seqs").bindparams(
                sa.bindparam("seqs", expanding=True)
            ),
            {"seqs": seqs},
        )
    after, logged, _ = _drain(make_settings(store, {"svc": source | UUIDS}))

    assert (after.errors, after.relayed, after.parked) == ([], 3, 0)
    assert [(e.event_id, e.aggregate_id, e.payload["n"]) for e in logged] == [
        (str(e), str(user), n) for n, e in enumerate(events)
    ]
