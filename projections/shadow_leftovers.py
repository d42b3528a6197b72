"""Which tables named like a blue/green rebuild's old tables readmodel made (PostgreSQL).

The swap renames each live table ``<table>__old`` and, in the same transaction, marks it
with a comment (:data:`LEFTOVER_MARK`); an old table a later swap renames
``<table>__old_<oid>`` keeps it. A drop blocked after the swap leaves such a table for the
next replay or ``--cleanup``, which drop only the tables that carry the mark: a table of
the user's that is merely named so is left alone, with a warning naming it, and the swap
gives the old table a free name instead.

A shadow ``<table>__rebuild`` carries a mark of its own (:data:`SHADOW_MARK`) from its
creation to the swap, which gives the new table its declared comment (or none, for the live
table's to come back): an interrupted replay's shadow is dropped by the next replay or
``--cleanup``; a table of the user's named so is left alone, with a warning, and a rebuild
is refused while it is there (it would build into it), whatever checkpoints the rebuild
left (a user's table may take the name of a shadow dropped by hand). One an older
readmodel's (from before the marks) interrupted rebuild left is dropped when the operator
names it: ``readmodel replay P --cleanup --drop-unmarked <table>`` (:func:`drop_unmarked_hint`).

SQLite keeps no comments: a shadow is recorded in ``rm_replay_shadows`` (its SQL name, the
live table's name and the statement ``sqlite_master`` kept for it), in the transaction that
creates it; the swap and the drop delete the row in theirs (the table with its last row).
Only a table so recorded, for this live table and still made by that statement, is an
interrupted replay's shadow: a table merely named so (another projection's live table, a
user's) is left alone, and a rebuild is refused while it is there (SQLite has no old
tables: its swap drops the live one).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import sqlalchemy as sa
import structlog

from projections.replay_types import not_unmarked
from projections.shadow_names import leftover_name, qualified, quote, run

logger = structlog.get_logger("readmodel.replay")

LEFTOVER_MARK = "readmodel leftover of table "
SHADOW_MARK = "readmodel shadow of table "


def pg_mark_leftover(
    conn: sa.Connection, live: sa.Table, name: str, mark: str = LEFTOVER_MARK
) -> None:
    """Mark the old table ``name`` (the live table's, just renamed) as readmodel's; with
    :data:`SHADOW_MARK`, the shadow ``name`` of ``live``."""
    text = f"{mark}{live.name}"
    run(conn, f"COMMENT ON TABLE {qualified(conn, live, name)} IS {literal(text)}")


def literal(text: str | None) -> str:
    """``text`` as an SQL string literal (``NULL`` for ``None``), for a statement sent by
    :func:`projections.shadow_names.run` (not formatted: a ``%`` stays one)."""
    if text is None:
        return "NULL"
    return "'" + text.replace("'", "''") + "'"


def pg_marked(
    conn: sa.Connection, live: sa.Table, name: str, mark: str = LEFTOVER_MARK
) -> bool | None:
    """Whether the table ``name`` (beside ``live``) carries ``mark``; ``None``: no such table."""
    row = conn.exec_driver_sql(
        "SELECT c.oid, obj_description(c.oid, 'pg_class') FROM pg_class c"
        " WHERE c.oid = to_regclass(%(t)s)",
        {"t": qualified(conn, live, name)},
    ).first()
    if row is None:
        return None
    return str(row[1] or "").startswith(mark)


def pg_free_leftover_name(conn: sa.Connection, live: sa.Table, number: int) -> str:
    """``leftover_name(live, number)``, or with the first larger number no table holds."""
    while True:
        name = leftover_name(live.name, number)
        if pg_marked(conn, live, name) is None:
            return name
        number += 1


def drop_unmarked_hint(projection: str | None, name: str) -> str:
    """The command that drops the table ``name`` (an SQL name) named like a leftover of
    ``projection``'s replays that readmodel did not mark: one a readmodel older than the
    marks left."""
    return f"readmodel replay {projection or '<projection>'} --cleanup --drop-unmarked " + (
        shlex.quote(name)
    )


def pick_unmarked(lookalikes: list[str], names: Sequence[str], projection: str) -> list[str]:
    """The tables of ``lookalikes`` (SQL names of tables named like ``projection``'s shadow
    or old tables that readmodel did not mark) that ``names`` name, each by its SQL name or
    without the quotes; ``ReplayRefused`` naming one that is none of them."""
    by_name = {name: name for name in lookalikes}
    by_name.update({name.replace('"', ""): name for name in lookalikes})
    for name in names:
        if name not in by_name:
            raise not_unmarked(
                name,
                f"a table named like a shadow or old table of {projection!r} that readmodel "
                "did not mark",
                lookalikes,
            )
    return list(dict.fromkeys(by_name[name] for name in names))


def warn_lookalikes(
    live: sa.Table, names: list[str], warned: set[str], projection: str | None = None
) -> None:
    """Warn of the tables ``names`` not in ``warned`` (those a replay warned of already: its
    plan, cleanup and each attempt of its swap find them again), and add them to it."""
    new = [name for name in names if name not in warned]
    warned.update(new)
    if new:
        logger.warning(
            "tables named like replay leftovers left alone",
            table=live.name,
            tables=new,
            detail="they lack readmodel's mark (a table of yours, or one a readmodel older "
            "than the mark left): neither a replay nor --cleanup drops them; rename them if "
            "they are yours; drop a leftover with "
            + "; ".join(f"'{drop_unmarked_hint(projection, name)}'" for name in new),
        )


SQLITE_MARKS = "rm_replay_shadows"
_SQLITE_MARKS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {SQLITE_MARKS} "
    "(name TEXT PRIMARY KEY, live TEXT NOT NULL, definition TEXT NOT NULL)"
)


def _sqlite_definition(conn: sa.Connection, live: sa.Table, name: str) -> str | None:
    """The statement ``sqlite_master`` kept for the table ``name`` (in ``live``'s schema);
    ``None``: no such table (SQLite names are case-insensitive)."""
    master = f"{quote(conn, live.schema)}.sqlite_master" if live.schema else "sqlite_master"
    row = conn.exec_driver_sql(
        f"SELECT sql FROM {master} WHERE type = 'table' AND name = ? COLLATE NOCASE", (name,)
    ).first()
    return None if row is None else str(row[0])


def _sqlite_has_marks(conn: sa.Connection) -> bool:
    return sa.inspect(conn).has_table(SQLITE_MARKS)


def sqlite_mark_shadow(conn: sa.Connection, live: sa.Table, name: str) -> None:
    """Record the shadow ``name`` of ``live``, just made in ``conn``'s transaction."""
    run(conn, _SQLITE_MARKS_DDL)
    conn.exec_driver_sql(
        f"INSERT OR REPLACE INTO {SQLITE_MARKS} (name, live, definition) VALUES (?, ?, ?)",
        (qualified(conn, live, name), live.name, _sqlite_definition(conn, live, name)),
    )


def sqlite_marked(conn: sa.Connection, live: sa.Table, name: str) -> bool | None:
    """Whether the table ``name`` is a shadow of ``live`` readmodel made (recorded, and made
    by the statement recorded); ``None``: no such table."""
    definition = _sqlite_definition(conn, live, name)
    if definition is None:
        return None
    if not _sqlite_has_marks(conn):
        return False
    row = conn.exec_driver_sql(
        f"SELECT 1 FROM {SQLITE_MARKS} WHERE name = ? AND live = ? AND definition = ?",
        (qualified(conn, live, name), live.name, definition),
    ).first()
    return row is not None


def sqlite_unmark(conn: sa.Connection, names: list[str]) -> None:
    """Forget the shadows ``names`` (SQL names), dropped or swapped in ``conn``'s
    transaction; the record goes with its last row (a store no replay is under way in
    holds no table of it)."""
    if names and _sqlite_has_marks(conn):
        for name in names:
            conn.exec_driver_sql(f"DELETE FROM {SQLITE_MARKS} WHERE name = ?", (name,))
        if conn.exec_driver_sql(f"SELECT 1 FROM {SQLITE_MARKS} LIMIT 1").first() is None:
            run(conn, f"DROP TABLE {SQLITE_MARKS}")
