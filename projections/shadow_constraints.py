"""Constraints a blue/green rebuild (:mod:`projections.shadow`) carries to the new table
(PostgreSQL):

- those added by hand on a live table (``ALTER TABLE ... ADD CONSTRAINT``: CHECK, UNIQUE,
  PRIMARY KEY, EXCLUDE, FOREIGN KEY), read by :func:`pg_hand_made_constraints` and built on
  the shadow once it is filled, like hand-made indexes, under the shadow name the swap
  renames back. Their check (a scan, an index build) runs before the swap, outside its lock:
  rebuilt data that breaks one stops the replay naming it, the live model untouched; the
  events the swap applies last are checked as they are written. A UNIQUE or PRIMARY KEY
  constraint is made from its index (``USING INDEX``), which keeps its storage options and
  tablespace; an EXCLUDE one is given its index's tablespace (``USING INDEX TABLESPACE``,
  which its definition text leaves out); a foreign key to a table of the projection
  references that table's shadow.
- the foreign keys of tables outside the projection referencing a live table
  (:func:`pg_referencing_keys`): a foreign key cannot be pointed at another table, so the
  swap drops each one and makes it again once the new table has the live name. Made in the
  swap transaction, it checks the referencing table's rows against the new table there
  (one scan of that table, under the swap's lock): a row the rebuilt table cannot meet
  stops the swap, which changes nothing. Added ``NOT VALID`` and validated after the
  commit would keep the swap shorter, but could fail when nothing can be undone.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError

from outbox.db import describe_db_error
from outbox.errors import StoreError
from projections.shadow_catalog import HandMadeIndex, make_or_stop
from projections.shadow_names import quoter, run

logger = structlog.get_logger("readmodel.replay")


def _rows(conn: sa.Connection, sql: str, params: dict[str, object]) -> list[sa.Row]:
    return conn.exec_driver_sql(sql, params).all()


@dataclass(frozen=True)
class HandMadeConstraint:
    name: str
    kind: str  # pg_constraint.contype: c, u, p, x, f
    definition: str  # pg_get_constraintdef(): names the live tables
    index: HandMadeIndex | None  # u, p: the index it is made from
    deferral: str  # `` DEFERRABLE INITIALLY DEFERRED``... (u, p: USING INDEX omits it)
    references: str | None  # f: the referenced table, as regclass writes it

    def describe(self, table: str) -> str:
        return f"constraint {self.name} on {table}: {self.definition}"


# Primary keys first (a foreign key may reference one), foreign keys last.
_PG_CONSTRAINTS = """
SELECT k.conname, k.contype::text, pg_get_constraintdef(k.oid),
       CASE WHEN k.contype IN ('u', 'p') THEN format('CREATE %%sINDEX %%s ON %%s%%I.%%I ',
         CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END, quote_ident(c.relname),
         CASE WHEN t.relkind = 'p' THEN 'ONLY ' ELSE '' END, n.nspname, t.relname) END,
       CASE WHEN k.contype IN ('u', 'p') THEN pg_get_indexdef(k.conindid) END,
       quote_ident(s.spcname),
       CASE WHEN k.condeferrable THEN ' DEFERRABLE' ELSE '' END
         || CASE WHEN k.condeferred THEN ' INITIALLY DEFERRED' ELSE '' END,
       CASE WHEN k.contype = 'f' THEN k.confrelid::regclass::text END,
       CASE WHEN k.contype = 'x' THEN pg_get_expr(i.indpred, i.indrelid) END
  FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  LEFT JOIN pg_class c ON c.oid = k.conindid
  LEFT JOIN pg_index i ON i.indexrelid = k.conindid
  LEFT JOIN pg_tablespace s ON s.oid = c.reltablespace
 WHERE k.conrelid = %(table)s::regclass AND k.contype IN ('c', 'u', 'p', 'x', 'f')
   AND k.coninhcount = 0
 ORDER BY k.contype <> 'p', k.contype = 'f', k.conname
"""


def pg_constraint_definitions(conn: sa.Connection, table_sql: str) -> list[tuple[str, str]]:
    """``(name, kind and definition)`` of each of the table's constraints."""
    rows = _rows(
        conn,
        "SELECT conname, contype::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %(table)s::regclass",
        {"table": table_sql},
    )
    return [(str(name), str(definition)) for name, definition in rows]


def pg_hand_made_constraints(
    conn: sa.Connection, live_sql: str, known: set[str]
) -> list[HandMadeConstraint]:
    """The live table's constraints whose names are not in ``known`` (those the shadow has
    too)."""
    found = []
    for name, kind, definition, prefix, indexdef, space, deferral, target, where in _rows(
        conn, _PG_CONSTRAINTS, {"table": live_sql}
    ):
        if name in known:
            continue
        index = HandMadeIndex(str(name), str(prefix), str(indexdef), space) if prefix else None
        if kind == "x" and space is not None:
            definition = _in_tablespace(str(definition), space, where, deferral)
        found.append(
            HandMadeConstraint(str(name), str(kind), str(definition), index, deferral, target)
        )
    return found


def _in_tablespace(definition: str, space: str, where: str | None, deferral: str) -> str:
    """An EXCLUDE constraint's definition with ``USING INDEX TABLESPACE``, which
    ``pg_get_constraintdef`` leaves out; it goes before the ``WHERE`` clause and the
    deferral, which that text ends with."""
    tail = (f" WHERE ({where})" if where else "") + deferral
    if not definition.endswith(tail):  # not seen: built in the default tablespace then
        logger.warning("tablespace of a constraint not carried", definition=definition)
        return definition
    head = definition[: len(definition) - len(tail)]
    return f"{head} USING INDEX TABLESPACE {space}{tail}"


def pg_make_constraint(
    conn: sa.Connection,
    table: str,
    constraint: HandMadeConstraint,
    shadow_sql: str,
    name_sql: str,
    shadows: dict[str, str],
) -> None:
    """Build ``constraint`` of the live ``table`` on its shadow ``shadow_sql`` as
    ``name_sql``; ``shadows`` maps the live tables of the projection (as regclass writes
    them) to their shadows', for a foreign key between them. A failure stops the replay."""
    what = f"constraint {constraint.name}"
    if constraint.index is not None:
        make_or_stop(conn, table, constraint.index.on(shadow_sql, name_sql), what)
        kind = "PRIMARY KEY" if constraint.kind == "p" else "UNIQUE"
        statement = (
            f"ALTER TABLE {shadow_sql} ADD CONSTRAINT {name_sql} {kind} "
            f"USING INDEX {name_sql}{constraint.deferral}"
        )
        make_or_stop(conn, table, statement, what)
        return
    definition = constraint.definition
    target = shadows.get(constraint.references or "")
    if target is not None:
        referenced = f" REFERENCES {constraint.references}("
        if definition.count(referenced) != 1:
            raise StoreError(f"{table}: {what}: cannot read its definition {definition!r}")
        definition = definition.replace(referenced, f" REFERENCES {target}(")
    statement = f"ALTER TABLE {shadow_sql} ADD CONSTRAINT {name_sql} {definition}"
    make_or_stop(conn, table, statement, what)


# -- foreign keys of other tables -----------------------------------------------------


@dataclass(frozen=True)
class ReferencingKey:
    name: str
    table: str  # the referencing table, as regclass writes it
    referenced: str  # the live table's name
    definition: str  # names the live table: made again, it names the new one
    comment: str | None  # a literal

    def describe(self) -> str:
        return f"foreign key {self.name} of {self.table}, to {self.referenced}"


_PG_REFERENCING = """
SELECT k.conname, k.conrelid::regclass::text, pg_get_constraintdef(k.oid),
       quote_literal(obj_description(k.oid, 'pg_constraint'))
  FROM pg_constraint k
 WHERE k.contype = 'f' AND k.confrelid = %(table)s::regclass
   AND k.conrelid <> ALL(%(projection)s::oid[]) AND k.coninhcount = 0
 ORDER BY 2, 1
"""


def pg_referencing_keys(conn: sa.Connection, live: list[tuple[str, str]]) -> list[ReferencingKey]:
    """The foreign keys of tables outside the projection that reference one of its live
    tables (``(name, sql)`` pairs of those that exist), read before the swap renames any."""
    oids = [
        conn.exec_driver_sql("SELECT %(t)s::regclass::oid", {"t": sql}).scalar_one()
        for _, sql in live
    ]
    return [
        ReferencingKey(str(key), str(table), name, str(definition), comment)
        for name, sql in live
        for key, table, definition, comment in _rows(
            conn, _PG_REFERENCING, {"table": sql, "projection": oids}
        )
    ]


_PG_REFERENCING_OWNERS = """
SELECT DISTINCT k.conrelid::regclass::text, quote_ident(pg_get_userbyid(c.relowner)),
       quote_ident(current_user)
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
 WHERE k.contype = 'f' AND k.confrelid = ANY(%(projection)s::oid[])
   AND k.conrelid <> ALL(%(projection)s::oid[])
   AND NOT pg_has_role(current_user, c.relowner, 'USAGE')
 ORDER BY 1
"""


def pg_referencing_refusals(conn: sa.Connection, oids: list[int]) -> list[str]:
    """A table outside the projection with a foreign key to a live table, which the
    replay's role may not alter (drop the foreign key and make it again): one message each."""
    return [
        f"{table} has a foreign key to a table of the projection, which the swap makes "
        f"again on the new table; the replay's role {me} may not alter {table} (it is "
        f"{owner}'s): replay as {owner} or a member of it"
        for table, owner, me in _rows(conn, _PG_REFERENCING_OWNERS, {"projection": oids})
    ]


def pg_drop_referencing(conn: sa.Connection, keys: list[ReferencingKey]) -> None:
    quote = quoter(conn)
    for key in keys:
        run(conn, f"ALTER TABLE {key.table} DROP CONSTRAINT {quote(key.name)}")


def pg_restore_referencing(conn: sa.Connection, keys: list[ReferencingKey]) -> None:
    """Make the foreign keys again, now referencing the new tables (which have the live
    names); one the rebuilt rows cannot meet stops the swap, naming it."""
    quote = quoter(conn)
    for key in keys:
        try:
            run(conn, f"ALTER TABLE {key.table} ADD CONSTRAINT {quote(key.name)} {key.definition}")
        except DBAPIError as exc:
            raise StoreError(
                f"{key.referenced}: {key.describe()} cannot reference the rebuilt table "
                f"({describe_db_error(exc)}); the live model is untouched: fix the rows of "
                f"{key.table} or drop the foreign key, and replay again"
            ) from exc
        if key.comment is not None:
            run(conn, f"COMMENT ON CONSTRAINT {quote(key.name)} ON {key.table} IS {key.comment}")
