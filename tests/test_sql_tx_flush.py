"""SqlTx's PostgreSQL flush paths write exactly the same rows.

A flush sends a group of rows either as one JSON document (``json_to_recordset``) or as
one array per column (``unnest``); the JSON path is taken only when every value reads back
the same. These tests write awkward values through both and compare the stored rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pydantic
import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from projections.api import UnstorableValueError
from projections.sql_plans import table_plan
from projections.sql_tx import NewRows, SqlTx
from projections.sql_writes import RefusedWrite

metadata = sa.MetaData()
table = sa.Table(
    "flush_paths",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("text", sa.Text),
    sa.Column("short", sa.String(4)),
    sa.Column("small", sa.SmallInteger),
    sa.Column("number", sa.BigInteger),
    sa.Column("flag", sa.Boolean),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("naive", sa.DateTime()),
)


class _Stamp(pydantic.BaseModel):
    at: datetime


_pydantic_zone = _Stamp(at="2024-03-01T12:00:00+05:30").at  # pydantic_core's TzInfo
_texts = ["", "plain", 'quote " and \\ backslash', "tab\tnew\nline\x01", "ünïcødé ✓ 𝄞", "'"]
_moments = [
    datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
    datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    datetime(2024, 10, 27, 2, 30, tzinfo=ZoneInfo("Europe/Amsterdam"), fold=1),
    datetime(1850, 1, 1, tzinfo=ZoneInfo("Europe/Amsterdam")),  # LMT: +00:19:32
    datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, seconds=7))),
    _pydantic_zone,
]


_WHOLE_MINUTES = [0, 1, 2, 5]  # the moments whose UTC offset JSON carries exactly
_VARIANTS = [*range(len(_moments)), "whole minutes", "naive"]


def _moment(i: int, variant: int | str) -> datetime:
    if variant == "naive":  # read in the session's time zone
        return datetime(2024, 3, 1, 12, 0, 0, i)
    if variant == "whole minutes":
        return _moments[_WHOLE_MINUTES[i % len(_WHOLE_MINUTES)]]
    assert isinstance(variant, int)
    return _moments[variant]


def _rows(prefix: str, variant: int | str) -> list[dict[str, Any]]:
    rows = []
    for i in range(14):
        rows.append(
            {
                "id": f"{prefix}{i}",
                "text": _texts[i % len(_texts)] if i % 5 else None,
                "small": [0, -32768, 32767, None][i % 4],
                "number": [0, 2**63 - 1, -(2**63), None, 7][i % 5],
                "flag": [True, False, None][i % 3],
                "at": None if i % 4 == 3 else _moment(i, variant),
                "naive": None if i % 2 else datetime(2024, 1, 2, 3, 4, 5, i),
            }
        )
    return rows


def _flush(
    engine: sa.Engine,
    rows: list[dict[str, Any]],
    *,
    force_arrays: bool = False,
    new_rows: NewRows | None = None,
    read_first: bool = False,
) -> None:
    plan = table_plan(engine.dialect, table)
    assert plan is not None
    original = plan.json_rows
    if force_arrays:
        plan.json_rows = lambda columns, rows: None  # type: ignore[method-assign]
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table}, lock_rows=False, new_rows=new_rows)
            if read_first:
                tx.prefetch(table, [row["id"] for row in rows])
            for row in rows:
                tx.upsert(table, row)
            tx.flush()
    finally:
        plan.json_rows = original  # type: ignore[method-assign]


def _stored(engine: sa.Engine, prefix: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(table).where(table.c.id.like(f"{prefix}%")).order_by(table.c.id)
        )
        return [tuple(row)[1:] for row in rows]


@pytest.mark.parametrize("variant", _VARIANTS)
def test_json_and_array_flushes_store_the_same_rows(
    pg_database: Callable[[], str], variant: int | str
) -> None:
    engine = create_engine(pg_database())
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:  # a session time zone other than UTC, for naive values
            name = engine.url.database
            conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET timezone = 'America/New_York'")
        engine.dispose()
        plan = table_plan(engine.dialect, table)
        assert plan is not None
        rows = _rows("j", variant)
        json_path = plan.json_rows(tuple(sorted(rows[0])), rows) is not None
        assert json_path == (variant not in (3, 4))  # offsets with seconds take the arrays
        for force_arrays, prefix in ((True, "a"), (False, "j")):
            _flush(engine, _rows(prefix, variant), force_arrays=force_arrays)
            # upserting over the rows: the update branch (with other values) is the same too
            _flush(engine, _rows(prefix, "whole minutes")[::-1], force_arrays=force_arrays)
            _flush(engine, _rows(prefix, variant)[:7], force_arrays=force_arrays)
        # COPY (a rebuild's new rows): new rows, then existing ones it must give up on
        new_rows = NewRows()
        _flush(engine, _rows("c", variant), new_rows=new_rows)
        assert new_rows.existing_found == set()
        _flush(engine, _rows("c", "whole minutes")[::-1], new_rows=new_rows)
        assert new_rows.existing_found == {"flush_paths"}
        _flush(engine, _rows("c", variant)[:7], new_rows=new_rows, read_first=True)
        copied = plan.copy_types(tuple(sorted(rows[0])), rows) is not None
        assert copied == (variant != "naive")  # a naive value for timestamptz: the upsert
        assert _stored(engine, "j") == _stored(engine, "a")
        assert _stored(engine, "c") == _stored(engine, "a")
        assert len(_stored(engine, "j")) == 14
    finally:
        engine.dispose()


def test_copy_gives_up_on_rows_that_exist(pg_database: Callable[[], str]) -> None:
    engine = create_engine(pg_database())
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": "old", "text": "before", "number": 1}])
        new_rows = NewRows()
        rows = [{"id": "new", "text": "a", "number": 2}, {"id": "old", "text": "b", "number": 3}]
        _flush(engine, rows, new_rows=new_rows)  # "old" exists: the whole COPY is undone
        assert new_rows.existing_found == {"flush_paths"}
        assert _stored(engine, "new") == [("a", None, None, 2, None, None, None)]
        assert _stored(engine, "old") == [("b", None, None, 3, None, None, None)]
        # from now on only rows read and found missing are copied; the others are upserted
        _flush(engine, [{"id": "new", "text": "c", "number": 4}], new_rows=new_rows)
        _flush(engine, [{"id": "n2", "text": "d"}], new_rows=new_rows, read_first=True)
        assert _stored(engine, "n") == [
            ("d", None, None, None, None, None, None),  # n2
            ("c", None, None, 4, None, None, None),  # new
        ]
    finally:
        engine.dispose()


def test_copy_failing_otherwise_ends_as_the_upsert_would(pg_database: Callable[[], str]) -> None:
    """A COPY that fails for another reason than an existing key (here a partial row that
    misses a NOT NULL column) is undone; the upsert then has the last word."""
    engine = create_engine(pg_database())
    counts = sa.Table(
        "flush_counts",
        sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("note", sa.Text),
    )

    def outcome(rows: list[dict[str, Any]], new_rows: NewRows | None) -> object:
        with engine.begin() as conn:
            conn.execute(counts.delete())
            conn.execute(counts.insert(), [{"id": "k", "total": 5, "note": "n"}])
        try:
            with engine.begin() as conn:
                tx = SqlTx(conn, {counts: counts}, lock_rows=False, new_rows=new_rows)
                for row in rows:
                    tx.upsert(counts, row)
                tx.flush()
        except RefusedWrite as refused:  # around what the driver-level paths raise
            assert isinstance(refused.error, psycopg.errors.IntegrityError)
            return type(refused.error).__name__
        with engine.connect() as conn:
            return conn.execute(sa.select(counts).order_by(counts.c.id)).all()

    try:
        counts.create(engine)
        for rows in (
            [{"id": "k", "note": "changed"}],  # exists, unread: taken for new
            [{"id": "new", "note": "no total"}],
            [{"id": "new", "total": 1, "note": "x"}, {"id": "k", "total": 2, "note": "y"}],
        ):
            new_rows = NewRows()
            assert outcome(rows, new_rows) == outcome(rows, None), rows
            assert new_rows.existing_found == {"flush_counts"}
        assert outcome([{"id": "k", "note": "x"}], None) == "NotNullViolation"
    finally:
        engine.dispose()


def test_values_without_an_exact_json_form_take_the_array_path(
    pg_database: Callable[[], str],
) -> None:
    engine = create_engine(pg_database())
    try:
        metadata.create_all(engine)
        plan = table_plan(engine.dialect, table)
        assert plan is not None
        columns = ("at", "id", "text")
        fine = [{"id": "1", "text": "x", "at": _moments[0]}]
        assert plan.json_rows(columns, fine) is not None
        for odd in (
            {"id": "1", "text": 5, "at": None},  # an int for a text column
            {"id": "1", "text": "x", "at": _moments[3]},  # an offset with seconds
            {"id": "1", "text": "x", "at": _moments[4]},
            {"id": "1", "text": "\ud800", "at": None},  # a lone surrogate
        ):
            assert plan.json_rows(columns, [*fine, odd]) is None, odd
        assert plan.json_rows(("id", "short"), [{"id": "1", "short": "ab"}]) is None
        assert plan.json_rows(("id", "number"), [{"id": "1", "number": True}]) is None
        assert plan.json_rows(("id", "number"), [{"id": "1", "number": 2**64}]) is None
        assert plan.json_rows(("id", "naive"), [{"id": "1", "naive": _moments[0]}]) is None
        mixed = [{"id": "1", "at": _moments[0]}, {"id": "2", "at": datetime(2024, 1, 1)}]
        assert plan.json_rows(("at", "id"), mixed) is None
    finally:
        engine.dispose()


codes = sa.Table(
    "flush_codes",
    metadata,
    sa.Column("code", sa.String(4), primary_key=True),
    sa.Column("label", sa.String(4)),
    sa.Column("fixed", sa.CHAR(3)),
)


def test_a_value_longer_than_its_column_is_refused_as_a_plain_insert_would_refuse_it(
    pg_database: Callable[[], str],
) -> None:
    """Parameters cast to VARCHAR(4) would be cut to four characters without a word; the
    upsert refuses the value, naming the column, where a plain insert fails."""
    engine = create_engine(pg_database())
    try:
        metadata.create_all(engine)
        for row, column in (
            ({"code": "a", "label": "toolong"}, "label"),
            ({"code": "b", "fixed": "four"}, "fixed"),
        ):
            with pytest.raises(UnstorableValueError, match=rf"^flush_codes\.{column} .* too long"):
                with engine.begin() as conn:
                    tx = SqlTx(conn, {codes: codes}, lock_rows=False)
                    tx.upsert(codes, row)
                    tx.flush()
        with engine.begin() as conn:
            tx = SqlTx(conn, {codes: codes}, lock_rows=False)
            tx.upsert(codes, {"code": "ok", "label": "fits", "fixed": "abc"})
            tx.flush()
        with engine.connect() as conn:
            assert [tuple(r) for r in conn.execute(sa.select(codes))] == [("ok", "fits", "abc")]
    finally:
        engine.dispose()


@pytest.mark.parametrize("batched", [False, True])
def test_a_key_longer_than_its_column_matches_no_row(
    pg_database: Callable[[], str], batched: bool
) -> None:
    """Not the row whose key it starts with (``toolong`` is not ``tool``)."""
    engine = create_engine(pg_database())
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(codes.insert(), [{"code": "tool", "label": "kept"}])
        with engine.begin() as conn:
            tx = SqlTx(conn, {codes: codes}, batch_prefetch=batched)
            tx.prefetch(codes, ["toolong", "tool"])
            assert tx.get(codes, "toolong") is None
            assert tx.get(codes, "tool") == {"code": "tool", "label": "kept", "fixed": None}
            tx.delete(codes, "toolong")
            tx.flush()
        with engine.connect() as conn:
            assert [tuple(r) for r in conn.execute(sa.select(codes))] == [("tool", "kept", None)]
    finally:
        engine.dispose()


partial = sa.Table(
    "partial_rows",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("a", sa.Integer),
    sa.Column("c", sa.BigInteger, nullable=False, server_default="7"),
    sa.Column("note", sa.Text),
)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_row_created_from_some_columns_reads_back_whole_within_the_batch(
    kind: str, pg_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> None:
    """Whether a read comes before or after a batch ends must not change what it sees: the
    columns the upsert left out come back with the table's defaults, not missing."""
    engine = create_engine(pg_database() if kind == "postgresql" else sqlite_database())
    try:
        partial.create(engine)
        with engine.begin() as conn:
            conn.execute(partial.insert(), [{"id": "old", "a": 0, "c": 1, "note": "kept"}])
        with engine.begin() as conn:
            tx = SqlTx(conn, {partial: partial})
            tx.upsert(partial, {"id": "new", "a": 1})
            assert tx.get(partial, "new") == {"id": "new", "a": 1, "c": 7, "note": None}
            tx.delete(partial, "old")
            tx.upsert(partial, {"id": "old", "a": 2})  # replaced by a partial row
            assert tx.get(partial, "old") == {"id": "old", "a": 2, "c": 7, "note": None}
            tx.upsert(partial, {"id": "new", "c": 8})
            assert tx.get(partial, "new") == {"id": "new", "a": 1, "c": 8, "note": None}
            tx.flush()
        with engine.connect() as conn:
            stored = conn.execute(sa.select(partial).order_by(partial.c.id)).all()
        assert [tuple(r) for r in stored] == [("new", 1, 8, None), ("old", 2, 7, None)]
    finally:
        engine.dispose()


def test_a_rebuild_copies_new_rows_into_a_table_named_with_percent(
    pg_database: Callable[[], str],
) -> None:
    """COPY is sent without parameters, so unformatted: the table and column names in it
    must hold a ``%`` as one (the dialect's quoting doubles it, for statements formatted)."""
    odd = sa.Table(
        "sales%2024__rebuild",
        sa.MetaData(),
        sa.Column("id%s", sa.Text, primary_key=True),
        sa.Column("amount", sa.BigInteger),
    )
    engine = create_engine(pg_database())
    try:
        odd.create(engine)
        new_rows = NewRows()
        with engine.begin() as conn:
            tx = SqlTx(conn, {odd: odd}, lock_rows=False, new_rows=new_rows)
            for n in range(3):
                tx.upsert(odd, {"id%s": f"k{n}", "amount": n})
            tx.flush()
        assert new_rows.existing_found == set()  # copied: not given up for the upsert
        with engine.connect() as conn:
            stored = conn.execute(sa.select(odd).order_by(odd.c["id%s"])).all()
        assert stored == [("k0", 0), ("k1", 1), ("k2", 2)]
    finally:
        engine.dispose()
