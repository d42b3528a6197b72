"""What the database holds on a live table beside the projection's declared model, and how a
blue/green rebuild (:mod:`projections.shadow`) carries it to the new table (privileges,
owner, storage options, replica identity and publications: :mod:`projections.shadow_security`).

PostgreSQL:

- indexes made by hand (not declared, not backing a constraint): built on the shadow after
  the bulk fill under a shadow name the swap renames back (:func:`pg_hand_made_indexes`,
  :func:`make_or_stop`); an invalid one (a failed ``CREATE INDEX CONCURRENTLY``) is skipped
  with a warning; one backing a constraint goes with it (:mod:`projections.shadow_constraints`);
- row-level security (the ENABLE and FORCE flags, as they were, and every policy), triggers
  made by hand and comments (on the table, its columns, indexes, triggers, policies and
  constraints): read before the swap renames anything (:func:`pg_capture`) and
  recreated once the new table has the live name (:func:`pg_restore`), so a policy, or a
  trigger, whose text names a table of the projection names the new one. They are made
  after the swap's last events are applied: a trigger never fires for the rebuild's own
  writes, and a policy (FORCE included) never filters them. A comment the model declares
  wins over the live one; a trigger or policy the model creates itself (a DDL event) is kept.
- the views reading the live table (:func:`pg_views`): redefined after the swap, with their
  options (``security_invoker``...); a materialized one is refused.

SQLite: indexes and triggers made by hand are kept in ``sqlite_master`` as the text that made
them: :func:`sqlite_hand_made` reads a live table's indexes before the swap drops it, and
:func:`sqlite_dependents` the triggers and views on the projection's tables or naming one
(anywhere), which the swap drops first and makes again last (:func:`sqlite_restore`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
import structlog

from outbox.db import describe_db_error
from outbox.errors import StoreError
from projections.shadow_names import quoter, run

logger = structlog.get_logger("readmodel.replay")


def _rows(conn: sa.Connection, sql: str, table_sql: str) -> list[sa.Row]:
    return conn.exec_driver_sql(sql, {"table": table_sql}).all()


# -- columns -------------------------------------------------------------------------

_PG_COLUMN_SEQUENCES = """
SELECT a.attname, pg_get_serial_sequence(%(table)s, a.attname) FROM pg_attribute a
 WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""


def pg_column_sequences(conn: sa.Connection, table_sql: str) -> dict[str, str]:
    """Column name -> the (qualified) sequence it owns: serial and identity columns."""
    rows = _rows(conn, _PG_COLUMN_SEQUENCES, table_sql)
    return {str(column): str(sequence) for column, sequence in rows if sequence is not None}


def _pg_columns(conn: sa.Connection, table_sql: str) -> list[str]:
    rows = _rows(
        conn,
        "SELECT attname FROM pg_attribute WHERE attrelid = %(table)s::regclass "
        "AND attnum > 0 AND NOT attisdropped",
        table_sql,
    )
    return [str(name) for (name,) in rows]


# -- views ----------------------------------------------------------------------------

_PG_VIEWS = """
SELECT DISTINCT v.oid::regclass::text, v.relkind::text, pg_get_viewdef(v.oid),
       array_to_string(array(SELECT format('%%s=%%L', o.option_name, o.option_value)
                               FROM pg_options_to_table(v.reloptions) o), ', ')
  FROM pg_depend d
  JOIN pg_rewrite r ON r.oid = d.objid
  JOIN pg_class v ON v.oid = r.ev_class
 WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
   AND d.refobjid = %(table)s::regclass AND r.ev_class <> d.refobjid
   AND v.relkind IN ('v', 'm')
"""


@dataclass(frozen=True)
class PgView:
    name: str  # as regclass writes it
    table: str  # the live table it reads (one of them)
    materialized: bool
    definition: str
    options: str  # ``security_invoker='true', check_option='local'``: its reloptions

    def redefine(self) -> str:
        """The statement that redefines it on the tables that have the names it reads
        (``CREATE OR REPLACE VIEW`` without ``WITH`` would reset its options)."""
        options = f" WITH ({self.options})" if self.options else ""
        return f"CREATE OR REPLACE VIEW {self.name}{options} AS {self.definition}"

    def refusal(self) -> str:
        return (
            f"materialized view {self.name} reads {self.table}: a rebuild would leave it on "
            f"the old table; drop it (and create it again after the replay), or replay "
            f"in place with --from-position"
        )


def pg_views(conn: sa.Connection, live: Iterable[tuple[str, str]]) -> list[PgView]:
    """The views (materialized ones too, which a rebuild refuses: they cannot be redefined
    in place) reading the live tables (``(name, sql)`` pairs of those that exist), with
    their options."""
    views: dict[str, PgView] = {}
    for name, table_sql in live:
        for view, kind, definition, options in _rows(conn, _PG_VIEWS, table_sql):
            text = str(definition).rstrip().rstrip(";")
            views[str(view)] = PgView(str(view), name, kind == "m", text, str(options))
    return [views[name] for name in sorted(views)]


# -- indexes made by hand -------------------------------------------------------------


@dataclass(frozen=True)
class HandMadeIndex:
    name: str
    prefix: str  # ``CREATE [UNIQUE ]INDEX <name> ON <table> `` as pg_get_indexdef writes it
    definition: str  # pg_get_indexdef(): the prefix, then ``USING <method> (...) ...``
    tablespace: str | None

    def on(self, table_sql: str, name_sql: str) -> str:
        """The statement that builds this index on ``table_sql`` as ``name_sql``."""
        if not self.definition.startswith(self.prefix):
            raise StoreError(f"index {self.name}: cannot read its definition {self.definition!r}")
        unique = "UNIQUE " if self.prefix.startswith("CREATE UNIQUE ") else ""
        tail = f" TABLESPACE {self.tablespace}" if self.tablespace else ""
        rest = self.definition[len(self.prefix) :]
        return f"CREATE {unique}INDEX {name_sql} ON {table_sql} {rest}{tail}"


_PG_INDEXES = """
SELECT c.relname, format('CREATE %%sINDEX %%s ON %%s%%I.%%I ',
         CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END, quote_ident(c.relname),
         CASE WHEN t.relkind = 'p' THEN 'ONLY ' ELSE '' END, n.nspname, t.relname),
       pg_get_indexdef(c.oid), quote_ident(s.spcname), i.indisvalid AND i.indisready,
       EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = c.oid AND k.conrelid = t.oid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
  LEFT JOIN pg_tablespace s ON s.oid = c.reltablespace
 WHERE i.indrelid = %(table)s::regclass
 ORDER BY c.relname
"""


def pg_hand_made_indexes(
    conn: sa.Connection, live_sql: str, known: set[str], *, warn: bool = True
) -> list[HandMadeIndex]:
    """The live table's indexes whose names are not in ``known`` (the live names of the
    shadow's indexes) and that back no constraint (one added by hand is carried with its
    constraint, :mod:`projections.shadow_constraints`). An invalid one is left out with a
    warning: the rebuilt table will not have it."""
    found = []
    rows = _rows(conn, _PG_INDEXES, live_sql)
    for name, prefix, definition, tablespace, valid, constraint in rows:
        if name in known or constraint:
            continue
        if valid:
            found.append(HandMadeIndex(str(name), str(prefix), str(definition), tablespace))
        elif warn:
            logger.warning(
                "a rebuild drops an index made by hand",
                detail=f"index {name} on {live_sql} is invalid (a failed CREATE INDEX "
                f"CONCURRENTLY?): the rebuilt table will not have it",
            )
    return found


def make_or_stop(conn: sa.Connection, table: str, statement: str, what: str) -> None:
    """Run ``statement``, which makes ``what`` (an index, trigger or policy of the live
    ``table``) on the rebuilt copy; a failure stops the replay naming it."""
    try:
        run(conn, statement)
    except sa.exc.DBAPIError as exc:
        raise StoreError(
            f"{table}: {what}, made by hand on the live table, cannot be made on the rebuilt "
            f"one ({describe_db_error(exc)}); the live model is untouched: fix or drop it "
            f"(or declare it in the projection) and replay again"
        ) from exc


# -- row-level security, triggers and comments (PostgreSQL) ---------------------------


@dataclass
class PgExtras:
    """What :func:`pg_capture` read on a live table, as statements to run on the new one."""

    security: list[str] = field(default_factory=list)  # [ENABLE|DISABLE, FORCE|NO FORCE]
    policies: dict[str, str] = field(default_factory=dict)  # name -> CREATE POLICY ... tail
    triggers: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (def, state)
    comments: dict[str | None, str] = field(default_factory=dict)  # column (None: table) -> lit
    # (kind, name) -> literal: comments on its indexes, triggers, policies and constraints
    details: dict[tuple[str, str], str] = field(default_factory=dict)


_PG_SECURITY = """
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %(table)s::regclass
"""

_PG_POLICIES = """
SELECT p.polname,
       CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                     WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
       array(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END
               FROM unnest(p.polroles) r),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
  FROM pg_policy p WHERE p.polrelid = %(table)s::regclass ORDER BY p.polname
"""

_PG_TRIGGERS = """
SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger
 WHERE tgrelid = %(table)s::regclass AND NOT tgisinternal ORDER BY tgname
"""

_PG_COMMENTS = """
SELECT NULL, quote_literal(obj_description(%(table)s::regclass, 'pg_class'))
 WHERE obj_description(%(table)s::regclass, 'pg_class') IS NOT NULL
UNION ALL
SELECT attname, quote_literal(col_description(attrelid, attnum)) FROM pg_attribute
 WHERE attrelid = %(table)s::regclass AND attnum > 0 AND NOT attisdropped
   AND col_description(attrelid, attnum) IS NOT NULL
"""

# The table's indexes, triggers, policies and constraints: (kind, name, comment literal,
# the name COMMENT ON takes: qualified for an index).
_PG_DETAILS = """
SELECT 'INDEX', c.relname, quote_literal(obj_description(c.oid, 'pg_class')),
       format('%%I.%%I', n.nspname, c.relname)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indrelid = %(table)s::regclass
UNION ALL
SELECT 'TRIGGER', tgname, quote_literal(obj_description(oid, 'pg_trigger')),
       quote_ident(tgname) FROM pg_trigger WHERE tgrelid = %(table)s::regclass AND NOT tgisinternal
UNION ALL
SELECT 'POLICY', polname, quote_literal(obj_description(oid, 'pg_policy')), quote_ident(polname)
  FROM pg_policy WHERE polrelid = %(table)s::regclass
UNION ALL
SELECT 'CONSTRAINT', conname, quote_literal(obj_description(oid, 'pg_constraint')),
       quote_ident(conname) FROM pg_constraint WHERE conrelid = %(table)s::regclass
"""

_TRIGGER_STATES = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


def pg_capture(conn: sa.Connection, table_sql: str) -> PgExtras:
    """Row-level security, hand-made triggers and comments of a live table, read before the
    swap renames it (deparsed with the names the tables have then: the live ones)."""
    extras = PgExtras()
    enabled, forced = _rows(conn, _PG_SECURITY, table_sql)[0]
    extras.security = ["ENABLE" if enabled else "DISABLE", "FORCE" if forced else "NO FORCE"]
    for name, kind, command, roles, using, check in _rows(conn, _PG_POLICIES, table_sql):
        tail = f"AS {kind} FOR {command} TO {', '.join(roles)}"
        tail += f" USING ({using})" if using is not None else ""
        tail += f" WITH CHECK ({check})" if check is not None else ""
        extras.policies[str(name)] = tail
    for name, definition, state in _rows(conn, _PG_TRIGGERS, table_sql):
        extras.triggers[str(name)] = (str(definition), str(state))
    extras.comments = {column: str(text) for column, text in _rows(conn, _PG_COMMENTS, table_sql)}
    extras.details = {
        (str(kind), str(name)): str(text)
        for kind, name, text, _ in _rows(conn, _PG_DETAILS, table_sql)
        if text is not None
    }
    return extras


def pg_restore(conn: sa.Connection, table: str, extras: PgExtras) -> None:
    """Recreate ``extras`` on the new table, which has the live table's name ``table`` now
    (so a trigger's definition, naming it, names the new table)."""
    quote = quoter(conn)
    for flag in extras.security:
        run(conn, f"ALTER TABLE {table} {flag} ROW LEVEL SECURITY")
    present = {str(name) for name, *_ in _rows(conn, _PG_POLICIES, table)}
    for name, tail in extras.policies.items():
        if name not in present:
            make_or_stop(
                conn, table, f"CREATE POLICY {quote(name)} ON {table} {tail}", f"policy {name}"
            )
    present = {str(name) for name, *_ in _rows(conn, _PG_TRIGGERS, table)}
    for name, (definition, state) in extras.triggers.items():
        if name in present:
            continue
        make_or_stop(conn, table, definition, f"trigger {name}")
        if state in _TRIGGER_STATES:
            run(conn, f"ALTER TABLE {table} {_TRIGGER_STATES[state]} TRIGGER {quote(name)}")
    declared = {column for column, _ in _rows(conn, _PG_COMMENTS, table)}
    columns = set(_pg_columns(conn, table))
    for column, literal in extras.comments.items():
        if column in declared or (column is not None and column not in columns):
            continue
        target = f"TABLE {table}" if column is None else f"COLUMN {table}.{quote(column)}"
        run(conn, f"COMMENT ON {target} IS {literal}")
    _restore_details(conn, table, extras.details)


def _restore_details(conn: sa.Connection, table: str, details: dict[tuple[str, str], str]) -> None:
    """Comment the new table's indexes, triggers, policies and constraints that have a
    commented namesake on the live one and no comment of their own."""
    for kind, name, text, target in _rows(conn, _PG_DETAILS, table):
        literal = details.get((str(kind), str(name)))
        if literal is None or text is not None:
            continue
        on = "" if kind == "INDEX" else f" ON {table}"
        run(conn, f"COMMENT ON {kind} {target}{on} IS {literal}")


# -- SQLite ---------------------------------------------------------------------------

_SQLITE_INDEXES = """
SELECT name, sql FROM sqlite_master
 WHERE tbl_name = ? COLLATE NOCASE AND type = 'index' AND sql IS NOT NULL ORDER BY name
"""

_SQLITE_TRIGGERS_AND_VIEWS = """
SELECT type, name, tbl_name, sql FROM sqlite_master
 WHERE type IN ('trigger', 'view') AND sql IS NOT NULL ORDER BY rowid
"""


def sqlite_hand_made(conn: sa.Connection, table: str, known: set[str]) -> list[tuple[str, str]]:
    """``(what, sql)`` of the indexes on ``table`` not named in ``known``, as the statements
    that made them (SQLite names are case-insensitive: ``ON Last_Deposit`` is on it too)."""
    rows = conn.exec_driver_sql(_SQLITE_INDEXES, (table,)).all()
    return [(f"index {name}", str(sql)) for name, sql in rows if name not in known]


def sqlite_dependents(
    conn: sa.Connection, tables: Iterable[str]
) -> list[tuple[str, str, str, str]]:
    """``(type, name, table, sql)`` of the triggers and views, in the order they were made, that are
    on one of ``tables`` or whose text names one (perhaps a false match, in a literal: made
    again as it was, that changes nothing). SQLite checks every trigger and view when a table
    is renamed: one naming a table that is not there at that moment fails the rename."""
    names = [table.lower() for table in tables]
    pattern = re.compile(
        r"(?<![\w$])(?:" + "|".join(re.escape(n) for n in names) + r")(?![\w$])", re.IGNORECASE
    )
    return [
        (str(kind), str(name), str(table), str(sql))
        for kind, name, table, sql in conn.exec_driver_sql(_SQLITE_TRIGGERS_AND_VIEWS).all()
        if str(table).lower() in names or pattern.search(str(sql))
    ]


def sqlite_drop(conn: sa.Connection, dependents: list[tuple[str, str, str, str]]) -> None:
    quote = quoter(conn)
    for kind, name, _, _ in reversed(dependents):
        run(conn, f"DROP {kind.upper()} IF EXISTS {quote(name)}")


def sqlite_restore(conn: sa.Connection, table: str, made: list[tuple[str, str]]) -> None:
    for what, sql in made:
        make_or_stop(conn, table, sql, what)
