"""Writing one value into one column through :class:`SqlTx` in one of four batch shapes and
reading it back, for the cross-kind value tests (tests/test_cross_kind_values*.py)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx
from projections.sql_writes import NewRows

SHAPES = ("one", "two", "beside_own", "copy")
"""One row; two rows alike; beside a row of the column's own value; a rebuild's COPY."""


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and repr(a) == repr(b)


def write_and_read(
    engine: sa.Engine, table: sa.Table, column: str, value: Any, shape: str, own: Any
) -> str | None:
    """Write ``value`` (into row ``a`` of ``table``, keyed by ``id``) in ``shape`` (``own``: the
    column's own value, for ``beside_own``); what went wrong (``None``: refused by the upsert
    naming the column, or read alike in and after its batch)."""
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table}, new_rows=NewRows() if shape == "copy" else None)
            try:
                tx.upsert(table, {"id": "a", column: value})
            except UnstorableValueError as exc:
                assert str(exc).startswith(f"{table.name}.{column} "), str(exc)
                return None
            if shape in ("two", "copy"):
                tx.upsert(table, {"id": "b", column: value})
            elif shape == "beside_own":
                tx.upsert(table, {"id": "b", column: own})
            in_batch = tx.get(table, "a")[column]  # type: ignore[index]
            tx.flush()
    except Exception as exc:  # noqa: BLE001 - reported (rolled back: nothing kept)
        return f"refused at the flush: {type(exc).__name__}: {exc}"[:200]
    with engine.begin() as conn:
        later = conn.execute(sa.select(table.c[column]).where(table.c.id == "a")).scalar()
        conn.execute(table.delete())
    if not same(in_batch, later):
        return f"read {in_batch!r} in its batch, {later!r} after"
    return None
