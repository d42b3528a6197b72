"""Writes the database refuses for what they hold: the event that made them is parked and
the lane goes on (poison does not block); values whose batching used to decide whether a
write was refused (mixed numeric types, rows read back from the table) are written alike
in any batch."""

from __future__ import annotations

import base64
import datetime
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from projections.api import Event, Projection, Tx, on
from projections.store import HandlerFailed
from tests.projection_fixtures import engine_on, log_events

metadata = sa.MetaData()
owners = sa.Table(
    "refused_owners",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner", sa.String(10), nullable=False),
    sa.Column("rating", sa.Float),
)
snapshots = sa.Table(
    "refused_snapshots",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("snapshot", sa.JSON, nullable=False),
)


class Owners(Projection):
    """``Placed`` writes the payload's owner (NULL or too long: refused by the database);
    ``Rated`` sets a rating (an int for some, a float for others); ``Copied`` embeds the row
    read back from the table in a JSON column of another."""

    name = "refused_owners"
    tables = (owners, snapshots)
    partitions = 1  # one lane: a batch holds many aggregates

    @on("shop", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(owners, {"id": event.aggregate_id, "owner": event.payload["owner"]})

    @on("shop", "Rated")
    def rated(self, event: Event[dict], tx: Tx) -> None:
        row = tx.get(owners, event.aggregate_id)
        tx.upsert(owners, {**row, "rating": event.payload["rating"]})

    @on("shop", "Copied")
    def copied(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(
            snapshots, {"id": event.aggregate_id, "snapshot": tx.get(owners, event.aggregate_id)}
        )


def run(url: str, events: list[tuple[str, str, dict[str, Any]]], batch_size: int) -> Any:
    projection = Owners()
    with engine_on(
        url, [projection], batch_size=batch_size, max_attempts=2, retry_backoff=0.001
    ) as (log, store, engine):
        head = log_events(log, events)
        engine.catch_up(deadline=60)
        with log.engine.connect() as conn:
            query = sa.select(owners, snapshots.c.snapshot).select_from(
                owners.outerjoin(snapshots, snapshots.c.id == owners.c.id)
            )
            rows = {r.id: r for r in conn.execute(query)}
        parked = store.parked(projection.name)
        checkpoints = store.checkpoints(projection.name)
        return rows, parked, checkpoints, head


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("batch_size", [1, 50])
def test_an_event_whose_writes_the_database_refuses_is_parked_and_the_lane_goes_on(
    kind: str, batch_size: int, database_for: Callable[[str], str]
) -> None:
    events = [(f"o{n}", "Placed", {"owner": f"u{n}"}) for n in range(12)]
    events[4] = ("bad-null", "Placed", {"owner": None})
    events[8] = ("bad-long", "Placed", {"owner": "x" * 11 if kind == "postgresql" else None})
    events.append(("bad-null", "Rated", {"rating": 4}))  # held behind the parked event
    rows, parked, checkpoints, head = run(database_for(kind), events, batch_size)
    assert sorted(rows) == sorted(f"o{n}" for n in range(12) if n not in (4, 8))
    parked = sorted(parked, key=lambda p: p.position)
    assert [(p.aggregate_id, p.position) for p in parked] == [
        ("bad-null", 5),
        ("bad-long", 9),
        ("bad-null", 13),
    ]
    assert "NOT NULL" in parked[0].reason.upper() or "NotNullViolation" in parked[0].reason
    if kind == "postgresql":  # refused by the upsert, naming the column
        long = "refused_owners.owner cannot hold a value of type str: value too long for type "
        assert long + "character varying(10)" in parked[1].reason, parked[1].reason
    assert parked[2].reason.startswith("held") and "(shop:5)" in parked[2].reason
    assert set(checkpoints.values()) == {head}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("batch_size", [1, 50])
def test_ints_beside_floats_and_rows_read_back_are_written_in_any_batch(
    kind: str, batch_size: int, database_for: Callable[[str], str]
) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(6):
        events.append((f"o{n}", "Placed", {"owner": f"u{n}"}))
    for n in range(6):
        events.append((f"o{n}", "Rated", {"rating": n if n % 2 else n + 0.5}))
    for n in range(6):
        events.append((f"o{n}", "Copied", {}))
    with capture_logs() as logs:
        rows, parked, checkpoints, head = run(database_for(kind), events, batch_size)
    assert parked == [] and set(checkpoints.values()) == {head}
    assert [e for e in logs if e["log_level"] == "warning"] == []  # no batch was refused
    for n in range(6):
        rating = n if n % 2 else n + 0.5
        assert rows[f"o{n}"].rating == rating
        assert rows[f"o{n}"].snapshot == {"id": f"o{n}", "owner": f"u{n}", "rating": rating}


padded_metadata = sa.MetaData()
padded_plain = sa.Table(
    "padded_hits",
    padded_metadata,
    sa.Column("code", sa.CHAR(6), primary_key=True),
    sa.Column("hits", sa.Integer, nullable=False),
)
padded_json = sa.Table(  # a JSON column: SQLAlchemy's statements, not the driver-level plan
    "padded_hits_json",
    padded_metadata,
    sa.Column("code", sa.CHAR(6), primary_key=True),
    sa.Column("hits", sa.Integer, nullable=False),
    sa.Column("seen", sa.JSON, nullable=False),
)


class PaddedHits(Projection):
    name = "padded_hits"
    tables = (padded_plain, padded_json)
    partitions = 1

    def prefetch(self, events: Any, tx: Tx) -> None:
        for table in self.tables:
            tx.prefetch(table, [e.payload["code"] for e in events])

    @on("shop", "Hit")
    def hit(self, event: Event[dict], tx: Tx) -> None:
        code = event.payload["code"]
        for table in self.tables:
            row = tx.get(table, code)
            hits = (row["hits"] if row else 0) + 1
            extra = {"seen": [hits]} if table is padded_json else {}
            tx.upsert(table, {"code": code, "hits": hits, **extra})


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("batch_size", [1, 10])
def test_a_char_key_shorter_than_its_column_is_found_by_a_prefetch(
    kind: str, batch_size: int, database_for: Callable[[str], str]
) -> None:
    """PostgreSQL returns CHAR(n) values blank-padded: a prefetched row was filed under
    ``'ab    '`` and ``get('ab')`` said it was missing, so the count started over."""
    url = database_for(kind)
    projection = PaddedHits()
    with engine_on(url, [projection], batch_size=batch_size) as (log, store, engine):
        log_events(log, [("p1", "Hit", {"code": "ab"})] * 3 + [("p2", "Hit", {"code": "cd"})])
        engine.catch_up(deadline=30)
        with log.engine.connect() as conn:
            for table in (padded_plain, padded_json):
                found = {
                    code.rstrip(): hits
                    for code, hits in conn.execute(sa.select(table.c.code, table.c.hits))
                }
                assert found == {"ab": 3, "cd": 1}, table.name


blame_metadata = sa.MetaData()
documents = sa.Table(
    "blamed_documents",
    blame_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("doc", sa.JSON),
    sa.Column("label", sa.Text),
)
readers = sa.Table("blamed_readers", blame_metadata, sa.Column("id", sa.Text, primary_key=True))


class Blamed(Projection):
    """``Placed`` writes a document (a set: not JSON) or a label (a dict: not text);
    ``Read`` only reads with ``tx.find``, which writes the batch's pending rows first."""

    name = "blamed"
    tables = (documents, readers)
    partitions = 1

    @on("shop", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        bad = event.payload.get("bad")
        tx.upsert(
            documents,
            {
                "id": event.aggregate_id,
                "doc": {1, 2} if bad == "doc" else {"ok": 1},
                "label": {"not": "text"} if bad == "label" else "fine",
            },
        )

    @on("shop", "Read")
    def read(self, event: Event[dict], tx: Tx) -> None:
        tx.find(documents, id="o0")
        tx.upsert(readers, {"id": event.aggregate_id})


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_refused_write_flushed_by_a_later_handler_parks_the_event_that_made_it(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """A later handler's ``tx.find`` flushed the poison write and was blamed for it (its
    event parked, its aggregate held); values the driver cannot bind left the lane stuck."""
    events = [
        ("o0", "Placed", {}),
        ("S", "Placed", {"bad": "doc"}),
        ("R1", "Read", {}),
        ("L", "Placed", {"bad": "label"}),
        ("R2", "Read", {}),
    ]
    with engine_on(
        database_for(kind), [Blamed()], batch_size=50, max_attempts=2, retry_backoff=0.001
    ) as (log, store, engine):
        head = log_events(log, events)
        engine.catch_up(deadline=60)
        with log.engine.connect() as conn:
            assert sorted(conn.execute(sa.select(readers.c.id)).scalars()) == ["R1", "R2"]
            assert sorted(conn.execute(sa.select(documents.c.id)).scalars()) == ["o0"]
        parked = sorted(store.parked("blamed"), key=lambda p: p.position)
        assert [(p.aggregate_id, p.position) for p in parked] == [("S", 2), ("L", 4)]
        assert set(store.checkpoints("blamed").values()) == {head}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_rebuild_names_the_event_whose_writes_are_refused_or_skips_it(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """A rebuild re-attempts what was parked live: a refused write stopped it with the
    database's error and no event; ``--skip-errors`` could not get past it either."""
    from projections.replay import Replayer, ReplayError, ReplayOptions

    events = [(f"o{n}", "Placed", {"owner": f"u{n}"}) for n in range(40)]
    events[25] = ("bad", "Placed", {"owner": None})
    events.append(("bad", "Rated", {"rating": 1}))
    projection = Owners()
    with engine_on(
        database_for(kind), [projection], batch_size=50, max_attempts=1, retry_backoff=0.001
    ) as (log, store, engine):
        log_events(log, events)
        engine.catch_up(deadline=60)

        def model() -> list[Any]:
            with log.engine.connect() as conn:
                return sorted(conn.execute(sa.select(owners)).all())

        live = model()
        assert len(live) == 39
        replayer = Replayer(engine.reader, projection, store, batch_size=16)
        with pytest.raises(ReplayError, match=r"replay stopped at shop:26 \(Placed of order:bad\)"):
            replayer.run(ReplayOptions())
        assert model() == live
        summary = Replayer(engine.reader, projection, store, batch_size=16).run(
            ReplayOptions(skip_errors=True)
        )
        assert [(s.position, s.held_behind) for s in summary.skipped] == [(26, None), (41, 26)]
        assert model() == live
        parked = sorted(store.parked("refused_owners"), key=lambda p: p.position)
        assert [p.position for p in parked] == [26, 41]


def test_refused_writes_arriving_just_before_the_swap_are_skipped_one_by_one(
    database_for: Callable[[str], str],
) -> None:
    """Each event skipped inside the swap used one of its five attempts (meant for lock
    timeouts): six such events made the swap give up with an UnboundLocalError."""
    from projections.replay import Replayer, ReplayHooks, ReplayOptions
    from tests.projection_fixtures import append_events

    projection = Owners()
    with engine_on(
        database_for("postgresql"), [projection], max_attempts=1, retry_backoff=0.001
    ) as (log, store, engine):
        head = log_events(log, [(f"o{n}", "Placed", {"owner": "u"}) for n in range(10)])
        engine.catch_up(deadline=30)

        class LateEvents(ReplayHooks):
            def before_swap(self) -> None:
                late = [(f"bad{n}", "Placed", {"owner": None}) for n in range(6)]
                append_events(log, [*late, ("good", "Placed", {"owner": "u"})], after=head)
                engine.catch_up(deadline=30)

        summary = Replayer(engine.reader, projection, store, hooks=LateEvents()).run(
            ReplayOptions(skip_errors=True)
        )
        assert [s.position for s in summary.skipped] == list(range(11, 17))
        assert summary.checkpoints == {"shop": 17}
        with log.engine.connect() as conn:
            ids = sorted(conn.execute(sa.select(owners.c.id)).scalars())
        assert ids == sorted([*(f"o{n}" for n in range(10)), "good"])
        assert sorted(p.position for p in store.parked("refused_owners")) == list(range(11, 17))


_boom = {"on": True}


class Flaky(Projection):
    """Owners whose ``boom`` events fail while ``_boom["on"]`` (a bug, fixed later)."""

    name = "flaky_owners"
    tables = (owners,)
    partitions = 1

    @on("shop", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        if event.payload.get("boom") and _boom["on"]:
            raise RuntimeError("a bug in the handler")
        tx.upsert(owners, {"id": event.aggregate_id, "owner": event.payload["owner"]})


@pytest.mark.parametrize("batch_size", [1, 10])
def test_each_event_is_parked_for_its_own_failure_whatever_the_batch(
    batch_size: int, database_for: Callable[[str], str]
) -> None:
    """Refused writes of an event before a failing one (``max_attempts = 1``): the earlier
    event was held behind the later one, its own error never recorded, in large batches.
    A retry of the aggregate (the bug fixed) then blamed the first event for the refused
    write of the second, inviting an operator to skip a good event."""
    _boom["on"] = True
    events = [
        ("x", "Placed", {"owner": None}),  # refused: NULL
        ("y", "Placed", {"owner": "v"}),
        ("x", "Placed", {"owner": "u", "boom": True}),  # its handler fails
        ("z", "Placed", {"owner": "u", "boom": True}),
        ("z", "Placed", {"owner": None}),
    ]
    with engine_on(
        database_for("postgresql"), [Flaky()], batch_size=batch_size, max_attempts=1
    ) as (log, store, engine):
        log_events(log, events)
        engine.catch_up(deadline=30)

        def reasons() -> dict[int, str]:
            return {p.position: p.reason for p in store.parked("flaky_owners")}

        found = reasons()
        assert sorted(found) == [1, 3, 4, 5]
        assert "NotNullViolation" in found[1] and "held" in found[3] and "(shop:1)" in found[3]
        assert "a bug in the handler" in found[4] and "(shop:4)" in found[5]

        _boom["on"] = False
        z = next(p for p in store.parked("flaky_owners") if p.position == 4)
        with pytest.raises(HandlerFailed) as failed:
            engine.retry(z)
        assert failed.value.event.position == 5
        after = reasons()
        assert "a bug in the handler" in after[4]  # not blamed for the next one's write
        assert "NotNullViolation" in after[5]


indexed = sa.Table(
    "refused_indexed",
    sa.MetaData(),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("title", sa.Text, nullable=False, index=True),
)


class Titles(Projection):
    name = "refused_titles"
    tables = (indexed,)
    partitions = 1

    @on("shop", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(indexed, {"id": event.aggregate_id, "title": event.payload["title"]})


def test_a_value_too_big_for_its_index_is_parked(database_for: Callable[[str], str]) -> None:
    """PostgreSQL refuses an index row over 8191 bytes (program limit exceeded, SQLSTATE
    54000): the event blocked its lane for good."""
    huge = base64.b85encode(random.Random(3).randbytes(30_000)).decode()  # incompressible
    events = [("a", "Placed", {"title": "fine"}), ("b", "Placed", {"title": huge})]
    events.append(("c", "Placed", {"title": "fine too"}))
    with engine_on(database_for("postgresql"), [Titles()], batch_size=10, max_attempts=1) as (
        log,
        store,
        engine,
    ):
        head = log_events(log, events)
        engine.catch_up(deadline=30)
        with log.engine.connect() as conn:
            assert sorted(conn.execute(sa.select(indexed.c.id)).scalars()) == ["a", "c"]
        (parked,) = store.parked("refused_titles")
        assert parked.position == 2 and "ProgramLimitExceeded" in parked.reason
        assert set(store.checkpoints("refused_titles").values()) == {head}


def test_a_rebuild_settles_a_skipped_event_it_applied(database_for: Callable[[str], str]) -> None:
    """An event skipped by an operator, then applied by a rebuild after the fix
    (``--apply-skipped``), stayed "skipped": a consistency wait for it said it would never be
    applied."""
    from projections.replay import Replayer, ReplayOptions

    _boom["on"] = True
    projection = Flaky()
    with engine_on(database_for("postgresql"), [projection], max_attempts=1) as (
        log,
        store,
        engine,
    ):
        log_events(log, [("x", "Placed", {"owner": "u", "boom": True})])
        engine.catch_up(deadline=30)
        (entry,) = store.parked("flaky_owners")
        engine.skip(entry)
        _boom["on"] = False
        Replayer(engine.reader, projection, store).run(ReplayOptions(apply_skipped=True))
        assert [p.status for p in store.parked("flaky_owners", status=None)] == ["replayed"]
        with log.engine.connect() as conn:
            assert conn.execute(sa.select(owners.c.id)).scalars().all() == ["x"]


typed_metadata = sa.MetaData()
typed = sa.Table(
    "refused_typed",
    typed_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("amount", sa.Numeric(10, 2)),
    sa.Column("units", sa.BigInteger),
    sa.Column("at", sa.DateTime(timezone=True)),
)


class Typed(Projection):
    """``Set`` writes the payload's value into the payload's column; ``Stamp`` writes a
    datetime into the column it names; ``Look`` reads the row the payload's key names."""

    name = "refused_typed"
    tables = (typed,)
    partitions = 1

    @on("shop", "Set")
    def set(self, event: Event[dict], tx: Tx) -> None:
        value = event.payload["value"]
        value = complex(1, 2) if value == "a complex" else value  # no converter knows one
        tx.upsert(typed, {"id": event.aggregate_id, event.payload["column"]: value})

    @on("shop", "Stamp")
    def stamp(self, event: Event[dict], tx: Tx) -> None:
        at = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        tx.upsert(typed, {"id": event.aggregate_id, event.payload["column"]: at})

    @on("shop", "Look")
    def look(self, event: Event[dict], tx: Tx) -> None:
        key = event.payload["key"]
        # A text key takes a time as its text (as an upsert stores it); psycopg adapts no
        # complex number at all.
        tx.get(typed, complex(1, 2) if key == "a complex" else key)
        tx.upsert(typed, {"id": event.aggregate_id, "units": 1})


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_value_of_a_type_the_column_cannot_take_parks_its_event_not_the_batch(
    kind: str, batch_size: int, database_for: Callable[[str], str]
) -> None:
    """PostgreSQL refuses a boolean for a NUMERIC column (datatype_mismatch), a boolean for a
    BIGINT or a timestamp for a NUMERIC (cannot_coerce; now refused by the upsert), and
    compared a text key with a time (undefined_function; a time key is now its text), and
    psycopg adapts no complex number: these were taken for the server's trouble, and the
    whole batch was retried until the deadline instead of its poison event being parked."""
    events: list[tuple[str, str, dict[str, Any]]] = [
        (f"o{n}", "Set", {"column": "amount", "value": n}) for n in range(10)
    ]
    poison = {  # position -> the error named in the reason (SQLite takes these values)
        # Refused by the upsert itself, naming the column (not left to the flush).
        3: (
            "Set",
            {"column": "amount", "value": True},
            r"amount cannot hold a value of type bool: .*boolean",
        ),
        5: (
            "Set",
            {"column": "units", "value": False},
            r"units cannot hold a value of type bool: .*boolean",
        ),
        7: (
            "Stamp",
            {"column": "amount"},
            r"amount cannot hold a value of type datetime.datetime: .*casts no datetime",
        ),
        9: ("Look", {"key": "a complex"}, "cannot adapt type 'complex'"),
    }
    if kind == "sqlite":  # values SQLite's driver refuses
        poison = {
            3: (
                "Set",
                {"column": "amount", "value": [1]},
                r"amount cannot hold a value of type list: a list is not one value",
            ),
            5: ("Set", {"column": "units", "value": "a complex"}, "ProgrammingError"),
            7: (
                "Set",
                {"column": "units", "value": {"a": 1}},
                r"units cannot hold a value of type dict: a dict is not one value",
            ),
            9: (
                "Look",
                {"key": [1]},
                r"id cannot hold a value of type list: sqlite3 binds no list",
            ),
        }
    for position, (event_type, payload, _) in poison.items():
        events[position - 1] = (f"bad{position}", event_type, payload)
    with engine_on(
        database_for(kind), [Typed()], batch_size=batch_size, max_attempts=2, retry_backoff=0.001
    ) as (log, store, engine):
        head = log_events(log, events)
        engine.catch_up(deadline=20)
        with log.engine.connect() as conn:
            rows = dict(conn.execute(sa.select(typed.c.id, typed.c.amount)).all())
        parked = sorted(store.parked("refused_typed"), key=lambda p: p.position)
        assert set(store.checkpoints("refused_typed").values()) == {head}
    assert rows == {f"o{n}": n for n in range(10) if n + 1 not in poison}
    assert [p.position for p in parked] == list(poison)
    for entry in parked:
        assert re.search(poison[entry.position][2], entry.reason), entry.reason
