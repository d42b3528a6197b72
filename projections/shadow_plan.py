"""What a blue/green rebuild's swap will carry from the live tables to the new ones, one
line per object, for ``readmodel replay --dry-run`` (:meth:`ShadowTables.carried`).

On PostgreSQL what was made by hand (an index, a constraint, a column's default or NOT
NULL; and, for a warning, a declared default or NOT NULL the live table differs from, which
the swap does not carry) is told from what the model declares by the tables the model makes:
they are made in a savepoint that is rolled back, so nothing is left, and under names of their own
(``<table>__dry_run``, as long as the shadow's ``__rebuild``, so names are cut short alike).
A shadow that exists already, left by a killed replay or being built, carries what the
swap would carry: read as declared, it would hide that. It is not touched either: dropping
it in the savepoint would wait for a rebuild's batch, stop the next ones until the listing
ends, and lock the tables outside the projection its foreign keys reference.

A role that may not create in a live table's schema (one that may only read, for a dry run)
makes them as temporary tables instead (``TEMPORARY`` on the database: PostgreSQL grants it
to every role by default); so does a dry run that finds a table (a user's, another
projection's) under a copy's name where the copy would be made: made with ``checkfirst``,
the copy would be that table, read as the declared model. The declared foreign keys to
tables outside the projection are left off them (a temporary table cannot reference a
permanent one, and referencing takes REFERENCES on that table, which a role that may create
need not have): each stands for one
of the live table's foreign keys as the made one would, by the name it would have, else by
its definition (its columns, the table and columns it references, its actions, match and
deferral). A role that may create neither gets the plan without the objects made by hand,
and a line saying so. A standalone sequence the columns declare (``sa.Sequence``) that does
not exist yet is made like the copies: in its schema, in the savepoint, by a role that may
create there; else as a temporary one, once however many columns declare it, which the
columns' defaults (and a server default taking its next value) take instead. One that
exists is used as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from outbox.catalog_names import catalog_name, catalog_schema, table_exists
from projections.shadow_catalog import (
    pg_capture,
    pg_hand_made_indexes,
    sqlite_dependents,
    sqlite_hand_made,
)
from projections.shadow_columns import (
    pg_declared_rules_not_carried,
    pg_describe_column_rule,
    pg_describe_column_settings,
    pg_hand_made_column_rules,
)
from projections.shadow_constraints import (
    HandMadeConstraint,
    pg_hand_made_constraints,
    pg_referencing_keys,
)
from projections.shadow_names import DRY_RUN_SUFFIX, run, table_sql
from projections.shadow_security import pg_describe_grants, pg_describe_state

if TYPE_CHECKING:
    from projections.shadow import ShadowTables

_LOCK_TIMEOUT_MS = 5000
UNLISTED = (
    "(not listed: indexes, constraints and column defaults made by hand; telling them from "
    "the declared ones takes CREATE on the tables' schema or TEMPORARY on the database, "
    "which this role has neither of)"
)

_PG_MAY_CREATE = """
SELECT bool_and(has_schema_privilege(coalesce(s, current_schema()), 'CREATE')),
       has_database_privilege(current_database(), 'TEMPORARY')
  FROM unnest(%(schemas)s::text[]) s
"""


def describe_carried(
    shadows: ShadowTables, conn: sa.Connection, warnings: list[str] | None = None
) -> list[str]:
    """What the swap carries; what it takes as declared over the live tables (a declared
    default or NOT NULL changed by hand) is added to ``warnings``."""
    if conn.dialect.name != "postgresql":
        return _sqlite_lines(shadows, conn)
    live = dict(shadows.live_tables(conn))
    lines = _pg_hand_made(shadows, conn, live, [] if warnings is None else warnings)
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


def _pg_hand_made(
    shadows: ShadowTables, conn: sa.Connection, live: dict[str, str], warnings: list[str]
) -> list[str]:
    """The indexes, constraints and column rules made by hand on the live tables; the
    declared column rules the live ones differ from, to ``warnings``."""
    lines: list[str] = []
    schemas = [catalog_schema(table) for table in shadows.mapping if table.name in live]
    if not schemas:
        return lines
    in_place, temporary = conn.exec_driver_sql(_PG_MAY_CREATE, {"schemas": schemas}).one()
    taken = _taken(conn, shadows.renamed(DRY_RUN_SUFFIX)) if in_place else []
    if taken:  # made where a table of the name is, it would be that table: made temporary
        in_place = False
    if not in_place and not temporary:
        return [_unlisted_taken(taken) if taken else UNLISTED]
    declared = shadows.renamed(DRY_RUN_SUFFIX, schema=None if in_place else "pg_temp")
    outside = _leave_outside_keys_off(declared)
    savepoint = conn.begin_nested()
    try:
        run(conn, f"SET LOCAL lock_timeout = {_LOCK_TIMEOUT_MS}")
        if temporary:
            _temporary_sequences(conn, declared)
        declared._create_tables(conn)
        for table in declared.mapping:
            if table.name not in live:
                continue
            shadow_sql = table_sql(conn, declared.mapping[table])
            for column, action in pg_hand_made_column_rules(conn, live[table.name], shadow_sql):
                lines.append(pg_describe_column_rule(table.name, column, action))
            warnings += pg_declared_rules_not_carried(
                conn, table.name, live[table.name], shadow_sql
            )
            known = declared._known_indexes(conn, table)
            for index in pg_hand_made_indexes(conn, live[table.name], known, warn=False):
                lines.append(f"index {index.name} on {table.name}")
            known = declared._known_constraints(conn, table)
            found = pg_hand_made_constraints(conn, live[table.name], known)
            for key in outside.get(table, []):
                _pair_off(conn, declared, table, key, found)
            lines += [constraint.describe(table.name) for constraint in found]
    finally:
        savepoint.rollback()
    return lines


def _taken(conn: sa.Connection, declared: ShadowTables) -> list[str]:
    """The copies' names a table of the database has where they would be made: made with
    ``checkfirst`` (a standalone sequence is shared), such a copy would not be made, and
    that table (a user's ``<table>__dry_run``, another projection's) would be read as the
    declared model."""
    return [table_sql(conn, copy) for copy in declared.mapping.values() if table_exists(conn, copy)]


def _unlisted_taken(taken: list[str]) -> str:
    return (
        "(not listed: indexes, constraints and column defaults made by hand; telling them "
        "from the declared ones takes tables made as declared, named "
        f"{', '.join(taken)}, which tables of the database are already, and this role may "
        "not make temporary ones instead (TEMPORARY on the database): rename those tables)"
    )


def _temporary_sequences(conn: sa.Connection, declared: ShadowTables) -> None:
    """Make each standalone sequence the copies' columns declare that does not exist yet,
    and that this role may not create in its schema, a temporary one of the same name (in
    the savepoint, so gone with it), once however many columns declare it: their defaults
    (and a server default that takes its next value) take it instead. One that exists is
    shared, as by the rebuild's shadows; one the role may create is made where the rebuild
    would make it, and goes with the savepoint like the copies."""
    made: dict[tuple[str | None, str], sa.Sequence] = {}
    for copy in declared.mapping.values():
        for column in copy.columns:
            sequence = column.default
            if not isinstance(sequence, sa.Sequence) or sequence.optional:
                continue
            key = (sequence.schema, sequence.name)
            if key not in made:
                made[key] = _temporary_sequence(conn, sequence)
            column.default = made[key]
            server = column.server_default
            if isinstance(server, sa.DefaultClause) and _next_value_of(server.arg) == key:
                column.server_default = sa.DefaultClause(made[key].next_value())


def _temporary_sequence(conn: sa.Connection, sequence: sa.Sequence) -> sa.Sequence:
    """``sequence`` itself when it exists or this role may create it, else a temporary one
    made of the same name (in the session's own temporary schema, by its name: the checks
    of ``create(checkfirst=True)`` find it there, and make it once)."""
    schema = None if sequence.schema is None else catalog_name(sequence.schema)
    if conn.dialect.has_sequence(conn, catalog_name(sequence.name), schema=schema):
        return sequence
    if conn.exec_driver_sql(_PG_MAY_CREATE_IN, {"schema": schema}).scalar():
        return sequence
    temporary = sequence._copy()
    temporary.schema = "pg_temp"
    conn.execute(sa.schema.CreateSequence(temporary))
    temporary.schema = conn.exec_driver_sql(_PG_TEMPORARY_SCHEMA).scalar_one()
    return temporary


def _next_value_of(arg: object) -> tuple[str | None, str] | None:
    """The sequence a server default takes the next value of (``Sequence.next_value()``)."""
    if isinstance(arg, sa.sql.functions.next_value):
        return (arg.sequence.schema, arg.sequence.name)
    return None


_PG_MAY_CREATE_IN = """
SELECT coalesce(bool_or(has_schema_privilege(oid, 'CREATE')), false)
  FROM pg_namespace WHERE nspname = coalesce(%(schema)s::text, current_schema())
"""
_PG_TEMPORARY_SCHEMA = "SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()"


def _leave_outside_keys_off(
    declared: ShadowTables,
) -> dict[sa.Table, list[sa.ForeignKeyConstraint]]:
    """Take the foreign keys to tables outside the projection off the (temporary) copies:
    live table -> those keys of its copy."""
    copies = set(declared.mapping.values())
    left: dict[sa.Table, list[sa.ForeignKeyConstraint]] = {}
    for live, copy in declared.mapping.items():
        for key in list(copy.foreign_key_constraints):
            if key.referred_table in copies:
                continue
            copy.constraints.discard(key)
            for element in key.elements:
                copy.foreign_keys.discard(element)
                element.parent.foreign_keys.discard(element)
            left.setdefault(live, []).append(key)
    return left


def _pair_off(
    conn: sa.Connection,
    declared: ShadowTables,
    live: sa.Table,
    key: sa.ForeignKeyConstraint,
    found: list[HandMadeConstraint],
) -> None:
    """Take out of ``found`` (the live table's constraints its copy lacks) the one the
    declared foreign key ``key``, left off the copy, stands for: as the copy's own would
    pair, the one of the name it would have, else the first of its definition."""
    if isinstance(key.name, str):
        made = str(key.name)
    else:  # as PostgreSQL names it, after the copy
        made = f"{declared.mapping[live].name}_{'_'.join(c.name for c in key.columns)}_fkey"
    name = declared._live_name(conn, made, live)
    definition = _key_definition(conn, key)
    match = next((c for c in found if c.name == name), None)
    if match is None:
        match = next((c for c in found if c.kind == "f" and c.definition == definition), None)
    if match is not None:
        found.remove(match)


_PG_KEY_PARTS = """
SELECT to_regclass(%(table)s)::text,
       (SELECT string_agg(quote_ident(c), ', ' ORDER BY o)
          FROM unnest(%(columns)s::text[]) WITH ORDINALITY u(c, o)),
       (SELECT string_agg(quote_ident(c), ', ' ORDER BY o)
          FROM unnest(%(referred)s::text[]) WITH ORDINALITY u(c, o))
"""
_NO_ACTION = {"", "NO ACTION"}


def _key_definition(conn: sa.Connection, key: sa.ForeignKeyConstraint) -> str | None:
    """``key`` as ``pg_get_constraintdef`` writes it once made; ``None`` when the table it
    references does not exist."""
    referred, columns, referred_columns = conn.exec_driver_sql(
        _PG_KEY_PARTS,
        {
            "table": table_sql(conn, key.referred_table),
            "columns": [element.parent.name for element in key.elements],
            "referred": [element.column.name for element in key.elements],
        },
    ).one()
    if referred is None:
        return None
    text = f"FOREIGN KEY ({columns}) REFERENCES {referred}({referred_columns})"
    match = _words(key.match)
    if match in {"FULL", "PARTIAL"}:
        text += f" MATCH {match}"
    for event, action in (("UPDATE", key.onupdate), ("DELETE", key.ondelete)):
        if _words(action) not in _NO_ACTION:
            text += f" ON {event} {_words(action)}"
    deferred = _words(key.initially) == "DEFERRED"
    if key.deferrable or deferred:
        text += " DEFERRABLE"
    if deferred:
        text += " INITIALLY DEFERRED"
    return text


def _words(text: str | None) -> str:
    return " ".join((text or "").upper().split())


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
