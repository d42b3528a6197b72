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
import structlog

from projections.shadow_catalog import make_or_stop
from projections.shadow_names import run

logger = structlog.get_logger("readmodel.replay")

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
                run(conn, f"ALTER TABLE {target_sql} ALTER COLUMN {column} {action}")


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


# -- NOT NULL and defaults set by hand -------------------------------------------------

_PG_NULLS_AND_DEFAULTS = """
SELECT quote_ident(a.attname), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
       a.attidentity <> '' OR a.attgenerated <> ''
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""


def _pg_nulls_and_defaults(
    conn: sa.Connection, table_sql: str
) -> dict[str, tuple[bool, str | None, bool]]:
    """Quoted column -> (NOT NULL, default, identity or generated)."""
    rows = conn.exec_driver_sql(_PG_NULLS_AND_DEFAULTS, {"table": table_sql}).all()
    return {str(c): (bool(n), d, bool(g)) for c, n, d, g in rows}


def pg_hand_made_column_rules(
    conn: sa.Connection, live_sql: str, shadow_sql: str
) -> list[tuple[str, str]]:
    """``(quoted column, action)``: ``SET DEFAULT ...`` where a live column has a default
    and its shadow (as declared) none, ``SET NOT NULL`` where a live column is NOT NULL
    and its shadow nullable; an identity or generated column is the model's."""

    shadow = _pg_nulls_and_defaults(conn, shadow_sql)
    rules = []
    for column, (not_null, default, generated) in _pg_nulls_and_defaults(conn, live_sql).items():
        if column not in shadow or generated or shadow[column][2]:
            continue
        if default is not None and shadow[column][1] is None:
            rules.append((column, f"SET DEFAULT {default}"))
        if not_null and not shadow[column][0]:
            rules.append((column, "SET NOT NULL"))
    return rules


def pg_describe_column_rule(table: str, column: str, action: str) -> str:
    what = "NOT NULL" if action == "SET NOT NULL" else action.removeprefix("SET ").lower()
    return f"{what} on column {table}.{column}"


def pg_carry_column_rules(
    conn: sa.Connection, table: str, live_sql: str, shadow_sql: str, *, not_null: bool = True
) -> None:
    """Set on the shadow the defaults (and NOT NULL, unless ``not_null`` is false: before
    the fill) set by hand on the live table's columns; one the rows break stops the replay."""
    for column, action in pg_hand_made_column_rules(conn, live_sql, shadow_sql):
        if action == "SET NOT NULL" and not not_null:
            continue
        statement = f"ALTER TABLE {shadow_sql} ALTER COLUMN {column} {action}"
        make_or_stop(conn, table, statement, pg_describe_column_rule(table, column, action))


def pg_declared_rules_not_carried(
    conn: sa.Connection, table: str, live_sql: str, declared_sql: str
) -> list[str]:
    """One line per declared default or NOT NULL the live table's column lacks or holds
    otherwise: the rebuilt table takes the declared one. The live table cannot tell a
    change made by hand from what an earlier version of the model declared (carrying the
    live one would keep a model's new default or NOT NULL from ever taking effect), so it
    is not carried, only told (``--dry-run``). A sequence's default names its own table's
    sequence: not compared."""
    declared = _pg_nulls_and_defaults(conn, declared_sql)
    lines = []
    for column, (not_null, default, generated) in _pg_nulls_and_defaults(conn, live_sql).items():
        if column not in declared or generated or declared[column][2]:
            continue
        where = f"column {table}.{column}"
        wanted = declared[column][1]
        if wanted is not None and default != wanted and not _both_sequences(default, wanted):
            live = (
                "table has no default" if default is None else f"default {default} is not carried"
            )
            lines.append(f"{where}: the live {live}, the rebuilt table takes the declared {wanted}")
        if declared[column][0] and not not_null:
            lines.append(
                f"{where}: the live table allows NULL, the rebuilt table takes the declared "
                "NOT NULL"
            )
    return lines


def _both_sequences(live: str | None, declared: str) -> bool:
    return live is not None and live.startswith("nextval(") and declared.startswith("nextval(")


def pg_warn_declared_rules(conn: sa.Connection, table: str, live_sql: str, shadow_sql: str) -> None:
    """Warn of each declared rule the new shadow (as declared) takes over the live table's."""
    for line in pg_declared_rules_not_carried(conn, table, live_sql, shadow_sql):
        logger.warning("a rebuild takes a column's declared default or NOT NULL", detail=line)
