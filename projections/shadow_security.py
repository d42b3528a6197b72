"""Who may read and change a projection's tables across a blue/green rebuild (PostgreSQL):
the shadow is locked down while it is built, and the swap gives the new table exactly the
live one's access rules, owner and table-level settings.

- :func:`pg_lock_down`, right after each shadow is created (same transaction): row-level
  security on (no policies: no role but its owner, the replay's, reads it, even if the
  replay is interrupted and the shadow left behind) and every privilege default
  privileges (``ALTER DEFAULT PRIVILEGES``) put on it or its sequences revoked;
- :func:`pg_copy_acl`, in the swap: the shadow's table, column and sequence privileges
  made exactly the live ones (revoked, then granted as on the live table, each grant
  under the role that granted it when the replay's role may ``SET ROLE`` to it);
- :class:`TableState`: owner, storage options (``fillfactor``, ``autovacuum_*``, and
  ``toast.*``), replica identity and the publications naming the table, read under the
  swap's lock and set on the new table;
- :func:`pg_refusals`: what a rebuild cannot carry, found before it starts: an object
  outside the projection that depends on a live table (a policy of another table, a SQL
  function with a ``BEGIN ATOMIC`` body, a column of the table's row type...) would follow
  the renamed old table and keep it from being dropped (a foreign key from another table
  is carried: :mod:`projections.shadow_constraints`);
  an owner or a publication the replay's role cannot set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import sqlalchemy as sa

from projections.shadow_catalog import make_or_stop, pg_column_sequences
from projections.shadow_constraints import pg_referencing_refusals
from projections.shadow_names import run


def _rows(conn: sa.Connection, sql: str, params: dict[str, object]) -> list[sa.Row]:
    return conn.exec_driver_sql(sql, params).all()


# -- privileges -----------------------------------------------------------------------

# Every entry of a relation's ACL; a NULL ACL is the owner's default one.
_PG_ACL = """
SELECT coalesce(quote_ident(r.rolname), 'PUBLIC'), a.privilege_type, a.is_grantable,
       a.grantor = c.relowner, quote_ident(pg_get_userbyid(a.grantor)),
       a.grantee = c.relowner
  FROM pg_class c
 CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(
       CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
  LEFT JOIN pg_roles r ON r.oid = a.grantee
 WHERE c.oid = %(table)s::regclass
"""

_PG_COLUMN_ACL = """
SELECT quote_ident(a.attname), coalesce(quote_ident(r.rolname), 'PUBLIC'), x.privilege_type,
       x.is_grantable, x.grantor = c.relowner, quote_ident(pg_get_userbyid(x.grantor))
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
 CROSS JOIN LATERAL aclexplode(a.attacl) x
  LEFT JOIN pg_roles r ON r.oid = x.grantee
 WHERE c.oid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

_PG_MAY_SET_ROLE = "SELECT pg_has_role(current_user, %(role)s::regrole::oid, 'MEMBER')"


def pg_lock_down(conn: sa.Connection, shadow_sql: str) -> None:
    """Make a new shadow readable by its owner (the replay) only: row-level security on,
    and what default privileges granted on it and its sequences revoked."""
    run(conn, f"ALTER TABLE {shadow_sql} ENABLE ROW LEVEL SECURITY")
    targets = [(shadow_sql, "TABLE")]
    targets += [(seq, "SEQUENCE") for seq in pg_column_sequences(conn, shadow_sql).values()]
    for target, kind in targets:
        grantees = {row[0] for row in _rows(conn, _PG_ACL, {"table": target}) if not row[5]}
        for grantee in sorted(grantees):
            run(conn, f"REVOKE ALL ON {kind} {target} FROM {grantee} CASCADE")


def pg_copy_acl(conn: sa.Connection, live_sql: str, shadow_sql: str) -> None:
    """Make the shadow's privileges (table, columns, sequences) exactly the live table's."""
    pairs = [(live_sql, shadow_sql, "TABLE")]
    shadow_sequences = pg_column_sequences(conn, shadow_sql)
    for column, sequence in pg_column_sequences(conn, live_sql).items():
        if column in shadow_sequences:
            pairs.append((sequence, shadow_sequences[column], "SEQUENCE"))
    grants: list[_Grant] = []
    for source, target, kind in pairs:
        for grantee in sorted({row[0] for row in _rows(conn, _PG_ACL, {"table": target})}):
            run(conn, f"REVOKE ALL ON {kind} {target} FROM {grantee} CASCADE")
        for grantee, privilege, grantable, by_owner, grantor, _ in _rows(
            conn, _PG_ACL, {"table": source}
        ):
            option = " WITH GRANT OPTION" if grantable else ""
            statement = f"GRANT {privilege} ON {kind} {target} TO {grantee}{option}"
            grants.append(_Grant(statement, grantee, grantable, by_owner, grantor))
    granted = {(row[0], row[1]) for row in _rows(conn, _PG_COLUMN_ACL, {"table": shadow_sql})}
    for column, grantee in sorted(granted):  # none, unless a DDL event of the model made some
        run(conn, f"REVOKE ALL ({column}) ON TABLE {shadow_sql} FROM {grantee} CASCADE")
    present = set(_pg_column_names(conn, shadow_sql))
    for column, grantee, privilege, grantable, by_owner, grantor in _rows(
        conn, _PG_COLUMN_ACL, {"table": live_sql}
    ):
        if column in present:  # a column the model no longer has takes its grants with it
            option = " WITH GRANT OPTION" if grantable else ""
            statement = f"GRANT {privilege} ({column}) ON TABLE {shadow_sql} TO {grantee}{option}"
            grants.append(_Grant(statement, grantee, grantable, by_owner, grantor))
    _grant_as_grantors(conn, grants)


def pg_describe_grants(conn: sa.Connection, table: str, live_sql: str) -> list[str]:
    """One line per privilege on the live table (or a column of it) held by a role other
    than its owner."""
    lines = []
    for grantee, privilege, grantable, _, _, to_owner in _rows(conn, _PG_ACL, {"table": live_sql}):
        if not to_owner:
            option = " with grant option" if grantable else ""
            lines.append(f"grant {privilege} on {table} to {grantee}{option}")
    for column, grantee, privilege, grantable, _, _ in _rows(
        conn, _PG_COLUMN_ACL, {"table": live_sql}
    ):
        option = " with grant option" if grantable else ""
        lines.append(f"grant {privilege} ({column}) on {table} to {grantee}{option}")
    return lines


def _pg_column_names(conn: sa.Connection, table_sql: str) -> list[str]:
    rows = _rows(
        conn,
        "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %(table)s::regclass "
        "AND attnum > 0 AND NOT attisdropped",
        {"table": table_sql},
    )
    return [str(name) for (name,) in rows]


class _Grant(NamedTuple):
    statement: str
    grantee: str
    grantable: bool
    by_owner: bool  # granted by the table's owner (or PUBLIC's/owner's defaults)
    grantor: str  # quoted


def _grant_as_grantors(conn: sa.Connection, grants: list[_Grant]) -> None:
    """Run the grants, each one the owner did not grant under ``SET ROLE`` to its grantor
    when the replay's role may (the grantor must hold it with grant option first: such a
    grant follows the one that gave it); otherwise as the replay (the owner's, then)."""
    me = conn.exec_driver_sql("SELECT quote_ident(current_user)").scalar_one()
    may: dict[str, bool] = {}
    given: set[str] = set()  # roles holding a grant option on the shadow by now
    pending = list(grants)
    while pending:
        ready = [g for g in pending if g.by_owner or g.grantor in given or not _may(conn, may, g)]
        stuck = not ready  # a grantor whose own grant option is missing: grant as the replay
        for grant in ready or pending:
            if grant.by_owner or stuck or not _may(conn, may, grant):
                run(conn, grant.statement)
            else:
                run(conn, f"SET LOCAL ROLE {grant.grantor}")
                run(conn, grant.statement)
                run(conn, f"SET LOCAL ROLE {me}")
            if grant.grantable:
                given.add(grant.grantee)
        pending = [] if stuck else [g for g in pending if g not in ready]


def _may(conn: sa.Connection, cache: dict[str, bool], grant: _Grant) -> bool:
    """Whether the replay's role may ``SET ROLE`` to the grant's grantor."""
    if grant.grantor not in cache:
        cache[grant.grantor] = bool(
            conn.exec_driver_sql(_PG_MAY_SET_ROLE, {"role": grant.grantor}).scalar_one()
        )
    return cache[grant.grantor]


# -- owner, storage options, replica identity, publications ----------------------------


@dataclass
class TableState:
    """What :func:`pg_table_state` read on a live table."""

    owner: str = ""  # quoted role name
    options: list[str] = field(default_factory=list)  # ``name='value'``, ``toast.`` ones too
    identity: str = "d"  # pg_class.relreplident
    identity_index: str | None = None  # quoted; for ``i`` (USING INDEX)
    publications: list[tuple[str, str]] = field(default_factory=list)  # quoted name, tail


_PG_TABLE_STATE = """
SELECT quote_ident(pg_get_userbyid(c.relowner)),
       array(SELECT format('%%s=%%L', o.option_name, o.option_value)
               FROM pg_options_to_table(c.reloptions) o
             UNION ALL
             SELECT format('toast.%%s=%%L', o.option_name, o.option_value)
               FROM pg_class t CROSS JOIN LATERAL pg_options_to_table(t.reloptions) o
              WHERE t.oid = c.reltoastrelid),
       c.relreplident::text,
       (SELECT quote_ident(x.relname) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
         WHERE i.indrelid = c.oid AND i.indisreplident)
  FROM pg_class c WHERE c.oid = %(table)s::regclass
"""

# Publications that list the table itself (FOR ALL TABLES and FOR TABLES IN SCHEMA ones
# take the new table by themselves), with a column list and row filter (PostgreSQL 15).
_PG_PUBLICATIONS_15 = """
SELECT quote_ident(p.pubname),
       (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
          FROM unnest(pr.prattrs::int2[]) n
          JOIN pg_attribute a ON a.attrelid = pr.prrelid AND a.attnum = n),
       pg_get_expr(pr.prqual, pr.prrelid)
  FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
 WHERE pr.prrelid = %(table)s::regclass ORDER BY p.pubname
"""

_PG_PUBLICATIONS = """
SELECT quote_ident(p.pubname), NULL, NULL
  FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
 WHERE pr.prrelid = %(table)s::regclass ORDER BY p.pubname
"""

_IDENTITIES = {"f": "FULL", "n": "NOTHING"}


def _server_version(conn: sa.Connection) -> int:
    return int(conn.exec_driver_sql("SHOW server_version_num").scalar_one())


def pg_table_state(conn: sa.Connection, live_sql: str) -> TableState:
    owner, options, identity, index = _rows(conn, _PG_TABLE_STATE, {"table": live_sql})[0]
    state = TableState(str(owner), [str(o) for o in options], str(identity), index)
    sql = _PG_PUBLICATIONS_15 if _server_version(conn) >= 150000 else _PG_PUBLICATIONS
    for name, columns, where in _rows(conn, sql, {"table": live_sql}):
        tail = (f" ({columns})" if columns else "") + (f" WHERE ({where})" if where else "")
        state.publications.append((str(name), tail))
    return state


def pg_describe_state(conn: sa.Connection, table: str, live_sql: str) -> list[str]:
    """One line per storage option, replica identity other than the default, publication."""
    state = pg_table_state(conn, live_sql)
    lines = [f"storage option {option} of {table}" for option in state.options]
    if state.identity in _IDENTITIES:
        lines.append(f"replica identity {_IDENTITIES[state.identity]} of {table}")
    elif state.identity == "i":
        lines.append(f"replica identity using index {state.identity_index} of {table}")
    lines += [f"publication {name} lists {table}{tail}" for name, tail in state.publications]
    return lines


def pg_set_owner(conn: sa.Connection, shadow_sql: str, state: TableState) -> None:
    """Give the shadow the live table's owner (before its privileges are copied: a change
    of owner rewrites them); :func:`pg_refusals` made sure the replay's role may."""
    owner = _rows(conn, _PG_TABLE_STATE, {"table": shadow_sql})[0][0]
    if owner != state.owner:
        run(conn, f"ALTER TABLE {shadow_sql} OWNER TO {state.owner}")


def pg_restore_state(conn: sa.Connection, table: str, state: TableState) -> None:
    """Storage options, replica identity and publications, on the new table once it has
    the live name ``table`` (and its indexes theirs)."""
    if state.options:
        statement = f"ALTER TABLE {table} SET ({', '.join(state.options)})"
        make_or_stop(conn, table, statement, "its storage options")
    if state.identity in _IDENTITIES:
        run(conn, f"ALTER TABLE {table} REPLICA IDENTITY {_IDENTITIES[state.identity]}")
    elif state.identity == "i" and state.identity_index:
        statement = f"ALTER TABLE {table} REPLICA IDENTITY USING INDEX {state.identity_index}"
        make_or_stop(conn, table, statement, f"replica identity index {state.identity_index}")
    for name, tail in state.publications:
        statement = f"ALTER PUBLICATION {name} ADD TABLE ONLY {table}{tail}"
        make_or_stop(conn, table, statement, f"its membership of publication {name}")


# -- what a rebuild cannot carry ------------------------------------------------------

# Objects depending on a live table (its row type, its owned sequences) that the rebuild
# neither recreates nor drops with the old table: those of relations outside the projection
# (views are redefined, materialized views refused by projections.shadow_catalog.pg_views).
_PG_OUTSIDE_DEPENDENTS = """
WITH projection AS (SELECT unnest(%(oids)s::oid[]) AS oid),
refs AS (
  SELECT c.oid AS tbl, 'pg_class'::regclass AS refclass, c.oid AS ref
    FROM pg_class c WHERE c.oid IN (SELECT oid FROM projection)
  UNION ALL
  SELECT c.oid, 'pg_type'::regclass, c.reltype
    FROM pg_class c WHERE c.oid IN (SELECT oid FROM projection)
  UNION ALL
  SELECT d.refobjid, 'pg_class'::regclass, d.objid
    FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
   WHERE d.refobjid IN (SELECT oid FROM projection) AND d.classid = 'pg_class'::regclass
     AND s.relkind = 'S' AND d.deptype IN ('a', 'i')
), dependents AS (
  SELECT r.tbl, r.ref, d.classid, d.objid, d.objsubid,
         CASE d.classid
           WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = d.objid)
           WHEN 'pg_constraint'::regclass
             THEN (SELECT conrelid FROM pg_constraint WHERE oid = d.objid)
           WHEN 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = d.objid)
           WHEN 'pg_attrdef'::regclass THEN (SELECT adrelid FROM pg_attrdef WHERE oid = d.objid)
           WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = d.objid)
           WHEN 'pg_publication_rel'::regclass  -- a column list, a row filter: carried
             THEN (SELECT prrelid FROM pg_publication_rel WHERE oid = d.objid)
           WHEN 'pg_class'::regclass THEN d.objid
         END AS rel
    FROM pg_depend d JOIN refs r ON d.refclassid = r.refclass AND d.refobjid = r.ref
   WHERE d.deptype = 'n'
)
SELECT DISTINCT d.tbl::regclass::text, pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM dependents d LEFT JOIN pg_class c ON c.oid = d.rel
 WHERE coalesce(d.rel, 0) NOT IN (SELECT oid FROM projection)
   AND NOT (d.classid = 'pg_rewrite'::regclass AND c.relkind IN ('v', 'm') AND d.ref = d.tbl)
   AND NOT (d.classid = 'pg_constraint'::regclass AND d.ref = d.tbl AND EXISTS (
     SELECT FROM pg_constraint k WHERE k.oid = d.objid AND k.contype = 'f'
        AND k.confrelid = d.tbl))  -- carried: projections.shadow_constraints
 ORDER BY 1, 2
"""

_PG_OWNER_CHECK = """
SELECT quote_ident(pg_get_userbyid(c.relowner)), quote_ident(current_user),
       pg_has_role(current_user, c.relowner, %(how)s),
       r.rolsuper OR has_schema_privilege(c.relowner, c.relnamespace, 'CREATE')
  FROM pg_class c, pg_roles r
 WHERE c.oid = %(table)s::regclass AND r.rolname = current_user
"""

_PG_PUBLICATION_CHECK = """
SELECT quote_ident(p.pubname), quote_ident(pg_get_userbyid(p.pubowner))
  FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
 WHERE pr.prrelid = %(table)s::regclass AND NOT pg_has_role(current_user, p.pubowner, 'USAGE')
"""


def pg_refusals(conn: sa.Connection, live: list[tuple[str, str]]) -> list[str]:
    """Why a rebuild of the live tables (``(name, sql)`` pairs of those that exist) must
    not start: one message per object it could not carry (none: it may)."""
    if not live:
        return []
    oids = [
        conn.exec_driver_sql("SELECT %(t)s::regclass::oid", {"t": sql}).scalar_one()
        for _, sql in live
    ]
    found = [
        f"{what} depends on {table} and is not part of the projection: a rebuild would "
        f"leave it on the old table, which could then not be dropped; drop it (and make it "
        f"again after the replay), or replay in place with --from-position"
        for table, what in _rows(conn, _PG_OUTSIDE_DEPENDENTS, {"oids": oids})
    ]
    found += pg_referencing_refusals(conn, oids)
    how = "SET" if _server_version(conn) >= 160000 else "MEMBER"
    for name, sql in live:
        owner, me, member, may_create = _rows(conn, _PG_OWNER_CHECK, {"table": sql, "how": how})[0]
        if owner != me and not (member and may_create):
            why = (
                f"{owner} may not create in the table's schema"
                if member
                else f"{me} is not a member of {owner}; replay as {owner} or a member of it"
            )
            found.append(
                f"{name} is owned by {owner}, whom the replay's role {me} cannot make the "
                f"rebuilt table's owner ({why})"
            )
        for publication, pub_owner in _rows(conn, _PG_PUBLICATION_CHECK, {"table": sql}):
            found.append(
                f"publication {publication} lists {name}, and the replay's role {me} cannot "
                f"add the rebuilt table to it (it is {pub_owner}'s); replay as {pub_owner} "
                f"or a member of it"
            )
    return found
