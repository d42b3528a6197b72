"""Which tables named like a blue/green rebuild's old tables readmodel made (PostgreSQL).

The swap renames each live table ``<table>__old`` and, in the same transaction, marks it
with a comment (:data:`LEFTOVER_MARK`); an old table a later swap renames
``<table>__old_<oid>`` keeps it. A drop blocked after the swap leaves such a table for the
next replay or ``--cleanup``, which drop only the tables that carry the mark: a table of
the user's that is merely named so is left alone, with a warning naming it, and the swap
gives the old table a free name instead.
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog

from projections.shadow_names import leftover_name, qualified

logger = structlog.get_logger("readmodel.replay")

LEFTOVER_MARK = "readmodel leftover of table "


def pg_mark_leftover(conn: sa.Connection, live: sa.Table, name: str) -> None:
    """Mark the old table ``name`` (the live table's, just renamed) as readmodel's."""
    text = f"{LEFTOVER_MARK}{live.name}".replace("'", "''")
    conn.exec_driver_sql(f"COMMENT ON TABLE {qualified(conn, live, name)} IS '{text}'")


def pg_marked(conn: sa.Connection, live: sa.Table, name: str) -> bool | None:
    """Whether the table ``name`` (beside ``live``) carries the mark; ``None``: no such table."""
    row = conn.exec_driver_sql(
        "SELECT c.oid, obj_description(c.oid, 'pg_class') FROM pg_class c"
        " WHERE c.oid = to_regclass(%(t)s)",
        {"t": qualified(conn, live, name)},
    ).first()
    if row is None:
        return None
    return str(row[1] or "").startswith(LEFTOVER_MARK)


def pg_free_leftover_name(conn: sa.Connection, live: sa.Table, number: int) -> str:
    """``leftover_name(live, number)``, or with the first larger number no table holds."""
    while True:
        name = leftover_name(live.name, number)
        if pg_marked(conn, live, name) is None:
            return name
        number += 1


def warn_lookalikes(live: sa.Table, names: list[str]) -> None:
    if names:
        logger.warning(
            "tables named like replay leftovers left alone",
            table=live.name,
            tables=names,
            detail="readmodel did not make them (they lack its mark): neither a replay nor "
            "--cleanup drops them; rename them if they are yours",
        )
