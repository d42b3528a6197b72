"""Property: where batches fall never changes a read model (DESIGN, projection model).

The same events are applied one per batch, all in one batch, and rebuilt by the
:class:`Replayer`. Each ``Set`` event writes a value into a column, reads the row back
(from the batch's own writes, or from the database when the write was in an earlier batch)
and writes what it read into a second column and its ``repr`` into a log: unless
``tx.upsert`` keeps each value as the column stores it, the three read models differ.
``Key`` events write a row under one form of a key and look it up under another.
"""

from __future__ import annotations

import datetime
import itertools
import math
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from projections.api import Event, Projection, Tx, on
from projections.replay import Replayer, ReplayOptions
from tests.batch_value_kinds import (
    ARRAYS,
    CLOCKS,
    LETTERS,
    SHORT,
    SPANS,
    UUID_TEXT,
    UUID_TEXTS,
)
from tests.projection_fixtures import engine_on, log_events

_PARIS = ZoneInfo("Europe/Paris")
_UTC = datetime.UTC
_NAN = float("nan")
_INF = float("inf")

# Column kinds: (SQLAlchemy type, values a handler might write into such a column).
_DATES: list[Any] = [
    datetime.datetime(2024, 10, 27, 2, 30),  # twice in Paris (DST ends)
    datetime.datetime(2024, 3, 31, 2, 30),  # never in Paris (DST starts)
    datetime.datetime(2024, 10, 27, 2, 30, fold=1),
    datetime.datetime(2024, 10, 27, 2, 30, tzinfo=_PARIS),
    datetime.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=_PARIS),
    datetime.datetime(2024, 3, 31, 2, 30, tzinfo=_PARIS),
    datetime.datetime(
        2026, 1, 2, 3, 4, 5, 600, tzinfo=datetime.timezone(datetime.timedelta(hours=5))
    ),
    datetime.date(2026, 1, 2),
    "2026-01-02T03:04:05+01:00",
    "2024-10-27 02:30",
    "2024-03-31 02:30:00",
    "epoch",
    "infinity",
    "-infinity",
    "today",
    "now",
    "2024-05-01 10:00 Europe/Paris",
    "May 1 2024",
    "01/02/2024",
    "2024-05-01 10:00:00+02",
    "allballs",
    5,
    None,
]
_NUMBERS: list[Any] = [
    42,
    42.0,
    2.5,
    -0.0,
    _NAN,
    _INF,
    -_INF,
    1e300,
    Decimal("2.5"),
    Decimal("NaN"),
    Decimal("Infinity"),
    Decimal("-0.001"),
    "42",
    " 42 ",
    "4e2",
    "2.5",
    "NaN",
    "Infinity",
    "-inf",
    "1e400",
    True,
    None,
]
_TEXTS: list[Any] = [
    "abc",
    "",
    7,
    2.5,
    -0.0,
    _NAN,
    _INF,
    -_INF,
    1e16,
    Decimal("1.50"),
    Decimal("NaN"),
    True,
    (1, "a"),
    (1, (2, None)),
    ("x",),
    (),
    [1, "a"],
    [],
    {"a": 1},
    uuid.UUID(int=5),
    datetime.datetime(2024, 10, 27, 2, 30),
    datetime.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=_PARIS),
    datetime.date(2026, 1, 2),
    b"raw",
    None,
]
_FLAGS: list[Any] = [
    True,
    False,
    0,
    1,
    2,
    1.0,
    Decimal(0),
    "true",
    "yes",
    " t ",
    "off",
    "abc",
    None,
]
_DOCS: list[Any] = [
    (1, 2),
    {1: "x", "y": (2, 3)},
    {"b": 1, "a": 2, "ccc": 3},
    _NAN,
    _INF,
    {"n": _NAN},
    1.0,
    1e16,
    Decimal("1.50"),
    {"when": datetime.date(2026, 1, 2)},
    {"at": datetime.datetime(2024, 10, 27, 2, 30, tzinfo=_PARIS)},
    "text",
    True,
    None,
]

_KINDS: dict[str, tuple[Callable[[], sa.types.TypeEngine[Any]], list[Any]]] = {
    "text": (sa.Text, _TEXTS),
    "name": (lambda: sa.String(40), _TEXTS),
    "flag": (sa.Boolean, _FLAGS),
    "at": (lambda: sa.DateTime(timezone=True), _DATES),
    "naive": (sa.DateTime, _DATES),
    "day": (sa.Date, _DATES),
    "cents": (lambda: sa.Numeric(10, 2), _NUMBERS),
    "count": (sa.Integer, _NUMBERS),
    "big": (sa.BigInteger, _NUMBERS),
    "ratio": (sa.Float, _NUMBERS),
    "real": (sa.REAL, _NUMBERS),
    "short": (lambda: sa.String(3), SHORT),
    "fixed": (lambda: sa.CHAR(3), SHORT),
    "clock": (sa.Time, CLOCKS),
    "clocktz": (lambda: sa.Time(timezone=True), CLOCKS),
    "span": (sa.Interval, SPANS),
}
_JSON_KINDS: dict[str, tuple[Callable[[], sa.types.TypeEngine[Any]], list[Any]]] = {
    "doc": (sa.JSON, _DOCS),
    "bdoc": (lambda: sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), _DOCS),
    # Types SQLAlchemy processes, also written by its statements.
    "letter": (lambda: sa.Enum("a", "b", native_enum=False), LETTERS),
    "uid": (lambda: sa.Uuid(as_uuid=False), UUID_TEXTS),
    "cents_list": (
        lambda: sa.ARRAY(sa.Numeric(10, 2)).with_variant(sa.JSON(), "sqlite"),
        ARRAYS,
    ),
}
_KEYS: list[Any] = [42, 42.0, "42", " 42 ", 42.5, Decimal("42"), True, 1, "x", None]
_TABLES = ("plain", "mixed")  # plain types only (the driver-level plan), and with JSON


def _tables(suffix: str) -> dict[str, sa.Table]:
    metadata = sa.MetaData()

    def written(kinds: dict[str, Any]) -> list[sa.Column[Any]]:
        return [
            sa.Column(f"{side}_{kind}", make())
            for kind, (make, _) in kinds.items()
            for side in ("w", "r")
        ]

    id_ = sa.Column("id", sa.Text, primary_key=True)
    seen = sa.Column("seen", sa.Text)
    plain = sa.Table(f"bv_plain_{suffix}", metadata, id_, seen, *written(_KINDS))
    mixed_columns = written(_KINDS | _JSON_KINDS)
    mixed = sa.Table(
        f"bv_mixed_{suffix}",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("seen", sa.Text),
        *mixed_columns,
    )
    int_keyed = sa.Table(
        f"bv_int_key_{suffix}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("label", sa.Text),
    )
    text_keyed = sa.Table(
        f"bv_text_key_{suffix}",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("label", sa.Text),
    )
    return {"plain": plain, "mixed": mixed, "int_key": int_keyed, "text_key": text_keyed}


def _projection(suffix: str, values: list[Any]) -> Projection:
    named = _tables(suffix)

    class Values(Projection):
        name = f"bv_{suffix}"
        tables = tuple(named.values())
        partitions = 1

        @on(f"bv_{suffix}", "Set")
        def set_value(self, event: Event[dict], tx: Tx) -> None:
            table = named[event.payload["table"]]
            kind, value = event.payload["kind"], values[event.payload["value"]]
            row = tx.get(table, event.aggregate_id) or dict.fromkeys(table.c.keys())
            tx.upsert(table, {**row, "id": event.aggregate_id, f"w_{kind}": value})

        @on(f"bv_{suffix}", "Copy")
        def copy_value(self, event: Event[dict], tx: Tx) -> None:
            table, kind = named[event.payload["table"]], event.payload["kind"]
            row = tx.get(table, event.aggregate_id)
            if row is not None:
                read = row[f"w_{kind}"]
                seen = f"{row['seen'] or ''}{kind}={read!r};"
                tx.upsert(table, {**row, f"r_{kind}": read, "seen": seen})

        @on(f"bv_{suffix}", "KeyWrite")
        def write_key(self, event: Event[dict], tx: Tx) -> None:
            table = named[event.payload["table"]]
            written = values[event.payload["key"]]
            tx.upsert(table, {"id": written, "label": event.aggregate_id})

        @on(f"bv_{suffix}", "KeyRead")
        def read_key(self, event: Event[dict], tx: Tx) -> None:
            table, log = named[event.payload["table"]], named["plain"]
            looked_up = values[event.payload["key"]]
            found = tx.get(table, looked_up)
            key = f"key-{event.aggregate_id}"
            row = tx.get(log, key) or dict.fromkeys(log.c.keys())
            seen = f"{row['seen'] or ''}{looked_up!r}->{found!r};"
            tx.upsert(log, {**row, "id": key, "seen": seen})

    return Values()


def _set(table: str, kinds: dict[str, Any]) -> st.SearchStrategy[tuple[str, str, Any]]:
    return st.sampled_from(sorted(kinds)).flatmap(
        lambda kind: st.tuples(st.just(table), st.just(kind), st.sampled_from(kinds[kind][1]))
    )


_write = st.one_of(
    _set("plain", _KINDS),
    _set("mixed", _KINDS | _JSON_KINDS),
    st.tuples(
        st.sampled_from(["int_key", "text_key"]),
        st.just("key"),
        st.tuples(st.sampled_from(_KEYS), st.sampled_from(_KEYS)),
    ),
)
_events = st.lists(st.tuples(st.sampled_from(["a", "b"]), _write), min_size=1, max_size=8)

_counter = itertools.count()


def _read_model(engine: sa.Engine, tables: list[sa.Table]) -> dict[str, list[str]]:
    """Every row of every table, as ``repr`` (``1 == True``, ``Decimal('1.0') == 1``)."""
    with engine.connect() as conn:
        return {
            table.name.split("_")[1]: sorted(
                repr(tuple(row)) for row in conn.execute(sa.select(table))
            )
            for table in tables
        }


def _apply(
    url: str, events: list[tuple[str, tuple[str, str, Any]]], batch_size: int, replay: bool
) -> Iterator[tuple[str, Any]]:
    """The read model (and the positions parked) after the events, in batches of
    ``batch_size``; then, when ``replay``, after a rebuild in one batch."""
    suffix = f"{next(_counter)}_{uuid.uuid4().hex[:6]}"
    values: list[Any] = []
    logged = []
    for aggregate, (table, kind, value) in events:
        if kind == "key":
            for event_type, key in zip(("KeyWrite", "KeyRead"), value, strict=True):
                values.append(key)
                logged.append((aggregate, event_type, {"table": table, "key": len(values) - 1}))
        else:
            values.append(value)
            payload = {"table": table, "kind": kind, "value": len(values) - 1}
            logged.append((aggregate, "Set", payload))
            logged.append((aggregate, "Copy", {"table": table, "kind": kind}))
    projection = _projection(suffix, values)
    with engine_on(
        url, [projection], batch_size=batch_size, retry_backoff=0.001, max_attempts=2
    ) as (
        log,
        store,
        engine,
    ):
        log_events(log, logged, source=f"bv_{suffix}")
        engine.catch_up(deadline=60)
        parked = sorted((p.position, p.reason) for p in engine.parked(projection.name))
        tables = list(projection.tables)
        yield "live", (_read_model(log.engine, tables), [p for p, _ in parked])
        if replay and not parked:
            Replayer(engine.reader, projection, store, batch_size=1000).run(ReplayOptions())
            yield "replay", (_read_model(log.engine, tables), [])


@pytest.fixture(params=["postgresql", "postgresql-paris", "sqlite"])
def store_url(request: pytest.FixtureRequest, database_for: Callable[[str], str]) -> str:
    """A fresh store; ``postgresql-paris``: its sessions' ``TimeZone`` is Europe/Paris."""
    kind = request.param.split("-")[0]
    url = database_for(kind)
    if request.param == "postgresql-paris":
        from outbox.db import create_engine

        engine = create_engine(url)
        database = sa.make_url(engine.url).database
        with engine.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET timezone = 'Europe/Paris'")
            conn.commit()
        engine.dispose()
    return url


_D = datetime.datetime
# What the property found (and fixes made pass), each kept as an explicit example so that a
# few generated ones per store suffice. A write the database refuses at the flush makes the
# engine apply the whole batch one event per batch, as ``batch_size=1`` does, hiding every
# other difference: the values it refused before they were converted or refused by the
# write are kept apart ("refusals"), each on an aggregate of its own (a parked event holds
# the later events of its aggregate).
_FOUND: dict[str, list[tuple[str, tuple[str, str, Any]]]] = {
    "keys filed under the form written": [
        ("a", ("int_key", "key", ("42", 42))),
        ("b", ("int_key", "key", (42.0, " 42 "))),
        ("c", ("int_key", "key", (Decimal("42"), True))),
        ("d", ("text_key", "key", (42, "42"))),
        ("e", ("text_key", "key", (True, 1))),
    ],
    "dates, DST and text times": [
        ("a", ("plain", "day", _D(2024, 10, 27, 2, 30))),
        ("b", ("plain", "naive", _D(2024, 10, 27, 2, 30, fold=1))),
        ("c", ("plain", "at", _D(2024, 3, 31, 2, 30))),
        ("d", ("mixed", "at", _D(2024, 10, 27, 2, 30, fold=1, tzinfo=_PARIS))),
        ("e", ("plain", "at", "2024-05-01 10:00 Europe/Paris")),
        ("f", ("plain", "naive", "epoch")),
        ("g", ("plain", "day", "now")),
        ("h", ("plain", "at", "infinity")),
        ("i", ("mixed", "naive", "01/02/2024")),
    ],
    "NaN, infinities and -0.0": [
        ("a", ("plain", "cents", _NAN)),
        ("b", ("plain", "ratio", "NaN")),
        ("c", ("plain", "real", -0.0)),
        ("d", ("plain", "text", _NAN)),
        ("e", ("plain", "ratio", -_INF)),
        ("f", ("mixed", "cents", "Infinity")),
    ],
    "tuples and JSON through SQLAlchemy": [
        ("a", ("mixed", "text", (1, "a"))),
        ("b", ("mixed", "name", (1, (2, None)))),
        ("c", ("mixed", "doc", {1: "x", "y": (2, 3)})),
        ("d", ("mixed", "bdoc", {"b": 1, "a": 2, "ccc": 3})),
    ],
    "sized text, times, intervals, enums, text UUIDs and arrays": [
        ("a", ("plain", "short", "abc  ")),
        ("b", ("plain", "fixed", 5)),
        ("c", ("plain", "clock", "12:00")),
        ("d", ("plain", "clocktz", datetime.time(12, 0, 0, 5))),
        ("e", ("plain", "span", "1 month")),
        ("f", ("mixed", "letter", "a")),
        ("g", ("mixed", "uid", UUID_TEXT.upper())),
        ("h", ("mixed", "cents_list", [Decimal("0.5625")])),
    ],
    "refusals": [
        ("a", ("int_key", "key", (None, 42))),
        ("b", ("plain", "count", _NAN)),
        ("c", ("plain", "big", Decimal("Infinity"))),
        ("d", ("plain", "cents", _INF)),
        ("e", ("plain", "text", (1, "a"))),
        ("f", ("plain", "name", b"raw")),
        ("g", ("plain", "count", Decimal("2.5"))),
        ("h", ("mixed", "big", Decimal("-0.001"))),
    ],
}


# Deterministic and bounded for CI: no saved-example replays, no random finds; what earlier
# runs found is kept in the explicit examples.
@settings(
    derandomize=True,
    database=None,
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=_events)
@example(events=_FOUND["keys filed under the form written"])
@example(events=_FOUND["dates, DST and text times"])
@example(events=_FOUND["NaN, infinities and -0.0"])
@example(events=_FOUND["tuples and JSON through SQLAlchemy"])
@example(events=_FOUND["sized text, times, intervals, enums, text UUIDs and arrays"])
@example(events=_FOUND["refusals"])
def test_batch_boundaries_never_change_the_read_model(
    store_url: str, events: list[tuple[str, tuple[str, str, Any]]]
) -> None:
    one_by_one = dict(_apply(store_url, events, batch_size=1, replay=False))
    all_at_once = dict(_apply(store_url, events, batch_size=1000, replay=True))
    assert all_at_once["live"] == one_by_one["live"]
    if "replay" in all_at_once:
        assert all_at_once["replay"] == one_by_one["live"]


def test_values_cover_every_column_kind() -> None:
    """The strategies reach every kind (a kind without values would test nothing), and the
    examples found write values the strategies draw."""
    assert all(values for _, values in (_KINDS | _JSON_KINDS).values())
    kinds = _KINDS | _JSON_KINDS
    for events in _FOUND.values():
        for _, (table, kind, value) in events:
            drawn = _KEYS if kind == "key" else kinds[kind][1]
            for one in value if kind == "key" else (value,):
                assert any(one is v or repr(one) == repr(v) for v in drawn), (table, kind, one)
    assert any(isinstance(v, float) and math.isnan(v) for v in _NUMBERS)


_REFUSED = {  # (column kind, value) -> what the message says, per store
    "postgresql": [
        ("count", _NAN, "holds no NaN"),
        ("big", Decimal("Infinity"), "holds no NaN or infinity"),
        ("cents", _INF, "holds no infinity"),
        ("at", "now", "a replay would not repeat"),
        ("naive", "infinity", "psycopg cannot read it back"),
        ("day", "01/02/2024", "DateStyle"),
        ("text", (1, "a"), "as a record"),
        ("name", b"raw", "as bytea"),
        ("short", "abcd", "value too long for type character varying(3)"),
        ("fixed", 12345, "value too long for type character(3)"),
        ("clock", "24:00", "psycopg cannot read it back"),
        ("clocktz", datetime.datetime(2024, 1, 2), "casts no naive datetime"),
        ("span", "11767033 years", "psycopg cannot read it back"),
        ("span", 5, "casts no int to an interval"),
    ],
    "sqlite": [
        ("count", _NAN, "stores NaN as NULL"),
        ("ratio", "NaN", "stores NaN as NULL"),
        ("text", _NAN, "stores NaN as NULL"),
        ("clock", "12:00", "SQLAlchemy stores a time"),
        ("span", datetime.timedelta.max, "past year 9999"),
    ],
}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_value_no_column_keeps_as_written_is_refused_naming_it(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """Refused by the upsert itself (before the batch holds it), naming table, column and
    value, where the database stored another value (NULL for NaN on SQLite, the clock's
    time for 'now'), one psycopg cannot read back, or failed without naming the column."""
    from outbox.db import create_engine
    from projections.api import UnstorableValueError
    from projections.sql_tx import SqlTx

    tables = _tables("refused")
    engine = create_engine(database_for(kind))
    next(iter(tables.values())).metadata.create_all(engine)
    table = tables["plain"]
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {t: t for t in tables.values()})
            for column, value, why in _REFUSED[kind]:
                with pytest.raises(UnstorableValueError) as refused:
                    tx.upsert(table, {"id": "a", f"w_{column}": value})
                message = str(refused.value)
                assert message.startswith(f"{table.name}.w_{column} cannot hold a value of type ")
                assert f"hold {value!r}" not in message, message
                assert why in message
            with pytest.raises(UnstorableValueError, match=r"\.id cannot hold None"):
                tx.upsert(tables["int_key"], {"id": None, "label": "x"})
            tx.flush()
            assert tx.get(table, "a") is None  # nothing refused joined the batch
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_key_is_found_under_any_form_its_column_stores_alike(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """A row upserted as ``{"id": "42"}`` into an integer key was filed under ``"42"`` in
    its batch: ``get(table, 42)`` missed it there and found it in a later batch."""
    from outbox.db import create_engine
    from projections.sql_tx import SqlTx

    tables = _tables("keys")
    engine = create_engine(database_for(kind))
    next(iter(tables.values())).metadata.create_all(engine)
    int_key, text_key = tables["int_key"], tables["text_key"]
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {t: t for t in tables.values()})
            tx.upsert(int_key, {"id": " 42 ", "label": "text"})
            tx.upsert(int_key, {"id": 42.0, "label": "float"})  # the same row
            tx.upsert(text_key, {"id": 7, "label": "int"})
            in_batch = [tx.get(int_key, 42), tx.get(int_key, "42"), tx.get(text_key, "7")]
            tx.flush()
        with engine.begin() as conn:
            tx = SqlTx(conn, {t: t for t in tables.values()})
            later = [tx.get(int_key, 42), tx.get(int_key, "42"), tx.get(text_key, "7")]
    finally:
        engine.dispose()
    expected = [{"id": 42, "label": "float"}] * 2 + [{"id": "7", "label": "int"}]
    assert in_batch == later == expected


@pytest.mark.parametrize(
    "events",
    [
        [("a", ("mixed", "flag", "true")), ("a", ("mixed", "flag", True))],  # found by the property
        [("a", ("plain", "flag", "abc")), ("a", ("plain", "flag", True))],
        [("a", ("plain", "cents", 1e300)), ("a", ("plain", "cents", 42))],
        [("a", ("plain", "short", "abcd")), ("a", ("plain", "short", "ok"))],
        [("a", ("plain", "clock", "24:00")), ("a", ("plain", "clock", "12:00"))],
    ],
)
def test_a_value_refused_at_the_flush_then_rewritten_in_its_batch(
    events: list[tuple[str, tuple[str, str, Any]]], pg_database: Callable[[], str]
) -> None:
    """A value the database refused only at the flush was never flushed when a later event
    of its batch rewrote the row: batches of one event parked it, bigger ones applied it.
    The upsert now converts ('true') or refuses ('abc', 1e300 into NUMERIC(10, 2), 'abcd'
    into VARCHAR(3)) it. 24:00 was stored and no later read succeeded."""
    url = pg_database()
    one_by_one = dict(_apply(url, events, batch_size=1, replay=False))
    all_at_once = dict(_apply(url, events, batch_size=1000, replay=False))
    assert all_at_once["live"] == one_by_one["live"]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_no_value_drawn_is_refused_only_at_the_flush(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """Each value the strategies draw, into each column kind, on both write paths (``plain``:
    the driver-level plan on PostgreSQL; ``mixed``: SQLAlchemy's statements) is refused by
    the upsert or stored by the flush. One refused only at the flush is never flushed when a
    later event of its batch rewrites the row, where batches of one event park it."""
    from outbox.db import create_engine
    from projections.api import UnstorableValueError
    from projections.sql_tx import SqlTx

    tables = _tables("flush")
    engine = create_engine(database_for(kind))
    next(iter(tables.values())).metadata.create_all(engine)
    at_the_flush = []
    try:
        for name in _TABLES:
            table = tables[name]
            kinds = _KINDS if name == "plain" else _KINDS | _JSON_KINDS
            for column, (_, values) in kinds.items():
                for value in values:
                    try:
                        with engine.begin() as conn:
                            tx = SqlTx(conn, {t: t for t in tables.values()})
                            try:
                                tx.upsert(table, {"id": "a", f"w_{column}": value})
                            except UnstorableValueError:
                                continue
                            tx.flush()
                            conn.rollback()
                    except Exception as exc:  # noqa: BLE001 - listed below
                        at_the_flush.append((name, column, value, type(exc).__name__))
    finally:
        engine.dispose()
    assert at_the_flush == [], "\n".join(map(repr, at_the_flush))
