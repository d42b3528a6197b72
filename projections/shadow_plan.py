"""What a blue/green rebuild's swap will carry from the live tables to the new ones, one
line per object, for ``readmodel replay --dry-run`` (:meth:`ShadowTables.carried`).

On PostgreSQL what was made by hand (an index, a constraint) is told from what the model
declares by the names the shadow tables get: they are made in a savepoint that is rolled
back, so nothing is left (a shadow that exists already, left over or being built, is read
as it is).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from projections.shadow_catalog import (
    pg_capture,
    pg_hand_made_indexes,
    sqlite_dependents,
    sqlite_hand_made,
)
from projections.shadow_columns import (
    pg_describe_column_rule,
    pg_describe_column_settings,
    pg_hand_made_column_rules,
)
from projections.shadow_constraints import pg_hand_made_constraints, pg_referencing_keys
from projections.shadow_security import pg_describe_grants, pg_describe_state

if TYPE_CHECKING:
    from projections.shadow import ShadowTables

_LOCK_TIMEOUT_MS = 5000


def describe_carried(shadows: ShadowTables, conn: sa.Connection) -> list[str]:
    if conn.dialect.name != "postgresql":
        return _sqlite_lines(shadows, conn)
    live = dict(shadows._live(conn))
    lines = _pg_hand_made(shadows, conn, live)
    lines += [key.describe() for key in pg_referencing_keys(conn, list(live.items()))]
    for name, sql in live.items():
        extras = pg_capture(conn, sql)
        lines += [f"trigger {trigger} on {name}" for trigger in extras.triggers]
        lines += [f"policy {policy} on {name}" for policy in extras.policies]
        if extras.security != ["DISABLE", "NO FORCE"]:
            lines.append(f"row-level security on {name}: {', '.join(extras.security)}")
        lines += [
            f"comment on table {name}" if column is None else f"comment on column {name}.{column}"
            for column in extras.comments
        ]
        lines += [f"comment on {kind.lower()} {what} of {name}" for kind, what in extras.details]
        lines += pg_describe_column_settings(name, sql, conn)
        lines += pg_describe_grants(conn, name, sql)
        lines += pg_describe_state(conn, name, sql)
    lines += [f"view {view.name}" for view in shadows._views(conn) if not view.materialized]
    return lines


def _pg_hand_made(shadows: ShadowTables, conn: sa.Connection, live: dict[str, str]) -> list[str]:
    """The indexes and constraints made by hand on the live tables."""
    lines: list[str] = []
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {_LOCK_TIMEOUT_MS}")
        shadows._create_tables(conn)
        for table in shadows.mapping:
            if table.name not in live:
                continue
            shadow_sql = _table_sql(conn, shadows.mapping[table])
            for column, action in pg_hand_made_column_rules(conn, live[table.name], shadow_sql):
                lines.append(pg_describe_column_rule(table.name, column, action))
            known = shadows._known_indexes(conn, table)
            for index in pg_hand_made_indexes(conn, live[table.name], known, warn=False):
                lines.append(f"index {index.name} on {table.name}")
            known = shadows._known_constraints(conn, table)
            for constraint in pg_hand_made_constraints(conn, live[table.name], known):
                lines.append(constraint.describe(table.name))
    finally:
        savepoint.rollback()
    return lines


def _table_sql(conn: sa.Connection, table: sa.Table) -> str:
    return conn.dialect.identifier_preparer.format_table(table)


def _sqlite_lines(shadows: ShadowTables, conn: sa.Connection) -> list[str]:
    preparer = conn.dialect.identifier_preparer
    lines: list[str] = []
    for table in shadows.mapping:
        declared = {
            str(preparer.format_constraint(index, _alembic_quote=False)) for index in table.indexes
        }
        lines += [
            f"{what} on {table.name}" for what, _ in sqlite_hand_made(conn, table.name, declared)
        ]
    dependents = sqlite_dependents(conn, [table.name for table in shadows.mapping])
    lines += [f"trigger {name} on {on}" for kind, name, on, _ in dependents if kind == "trigger"]
    lines += [f"view {name}" for kind, name, _, _ in dependents if kind == "view"]
    return lines
