"""Per-column settings a blue/green rebuild (:mod:`projections.shadow`) carries from a live
table to its shadow (PostgreSQL): the statistics target, storage, compression and options
(``n_distinct``, ``n_distinct_inherited``: the ones PostgreSQL documents; a server may keep
others of its own there) set by ``ALTER COLUMN``.

They are set on the shadow right after it is made, before the bulk fill: storage and
compression apply to the values written after them, so the rebuilt rows are stored as the
live ones would be. The swap sets them again from the live table, for a change made while
the rebuild ran. Storage and compression are kept only where the column's type is the
same on both tables (a model that changed the type may have one that refuses them).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
_COMPRESSION = {"": "DEFAULT", "p": "pglz", "l": "lz4"}


@dataclass(frozen=True)
class ColumnSettings:
    type: str
    statistics: int  # -1: the default
    storage: str
    type_storage: str
    options: tuple[str, ...]  # ``name='value'``
    compression: str


_PG_COLUMNS = """
SELECT quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
       coalesce(a.attstattarget, -1), a.attstorage::text, t.typstorage::text,
       array(SELECT format('%%s=%%L', o.option_name, o.option_value)
               FROM pg_options_to_table(a.attoptions) o
              WHERE o.option_name IN ('n_distinct', 'n_distinct_inherited') ORDER BY 1),
       a.attcompression::text
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""


def pg_column_settings(conn: sa.Connection, table_sql: str) -> dict[str, ColumnSettings]:
    """Quoted column name -> its settings."""
    rows = conn.exec_driver_sql(_PG_COLUMNS, {"table": table_sql}).all()
    return {
        str(name): ColumnSettings(
            str(kind), int(stats), str(storage), str(default), tuple(options), str(compression)
        )
        for name, kind, stats, storage, default, options, compression in rows
    }


def _changes(live: ColumnSettings, target: ColumnSettings) -> list[str]:
    """The ``ALTER COLUMN`` actions that give ``target`` the settings of ``live``."""
    actions = []
    if live.statistics != target.statistics:
        actions.append(f"SET STATISTICS {live.statistics}")
    same_type = live.type == target.type
    if same_type and live.storage != target.storage:
        actions.append(f"SET STORAGE {_STORAGE[live.storage]}")
    if same_type and live.compression != target.compression:
        actions.append(f"SET COMPRESSION {_COMPRESSION[live.compression]}")
    if live.options != target.options:
        names = sorted({option.split("=", 1)[0] for option in target.options})
        if names:
            actions.append(f"RESET ({', '.join(names)})")
        if live.options:
            actions.append(f"SET ({', '.join(live.options)})")
    return actions


def pg_copy_column_settings(conn: sa.Connection, live_sql: str, target_sql: str) -> None:
    """Give the columns of ``target_sql`` the settings of those of ``live_sql`` with the
    same names."""
    target = pg_column_settings(conn, target_sql)
    for column, live in pg_column_settings(conn, live_sql).items():
        if column in target:
            for action in _changes(live, target[column]):
                conn.exec_driver_sql(f"ALTER TABLE {target_sql} ALTER COLUMN {column} {action}")


def pg_describe_column_settings(table: str, live_sql: str, conn: sa.Connection) -> list[str]:
    """One line per setting of the live table's columns that is not the default."""
    lines = []
    for column, live in pg_column_settings(conn, live_sql).items():
        where = f"{table}.{column}"
        if live.statistics >= 0:
            lines.append(f"statistics {live.statistics} of {where}")
        if live.storage != live.type_storage:
            lines.append(f"storage {_STORAGE[live.storage]} of {where}")
        if live.compression:
            lines.append(f"compression {_COMPRESSION[live.compression]} of {where}")
        lines.extend(f"option {option} of {where}" for option in live.options)
    return lines
