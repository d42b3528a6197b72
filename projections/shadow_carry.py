"""Carrying what was made by hand on a projection's live tables (PostgreSQL) onto their
shadows: indexes and constraints built on each shadow under shadow names the swap renames
back (:meth:`ShadowCarry.carry`), and which of the live table's the shadow has already.
:class:`ShadowCarry` is mixed into :class:`projections.shadow.ShadowTables`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from projections.shadow_catalog import make_or_stop, pg_hand_made_indexes
from projections.shadow_columns import pg_carry_column_rules
from projections.shadow_constraints import (
    HandMadeConstraint,
    pg_constraint_definitions,
    pg_hand_made_constraints,
    pg_make_constraint,
)
from projections.shadow_keys import OutsideKey
from projections.shadow_names import PG_NAME_LIMIT, fitted, quoter, table_sql
from projections.shadow_swap import pg_dependents


class ShadowCarry:
    """The carrying half of :class:`projections.shadow.ShadowTables`; needs its ``mapping``,
    ``suffix``, ``live_tables`` and ``_live_name``."""

    suffix: str
    mapping: dict[sa.Table, sa.Table]
    _carried: dict[str, str]

    if TYPE_CHECKING:

        def live_tables(self, conn: sa.Connection) -> list[tuple[str, str]]: ...

        def _live_name(self, conn: sa.Connection, name: str, live: sa.Table) -> str: ...

    def carry(
        self, conn: sa.Connection, *, warn: bool = True, outside: list[OutsideKey] | None = None
    ) -> None:
        """Build on each shadow the indexes and constraints made by hand on its live table
        (PostgreSQL), under shadow names the swap renames back; those already built are left
        as they are. Run after the bulk fill, again just before the swap and by the swap for
        one made meanwhile: a constraint the rebuilt rows break stops the replay, naming it.
        With ``outside``, the foreign keys to tables outside the projection are added to it
        instead, for :func:`projections.shadow_keys.pg_add_outside_keys`."""
        if conn.dialect.name != "postgresql":
            return
        quote = quoter(conn)
        live_tables = dict(self.live_tables(conn))
        constraints: list[tuple[sa.Table, HandMadeConstraint]] = []
        for live, shadow in self.mapping.items():
            if live.name not in live_tables:
                continue
            shadow_sql = table_sql(conn, shadow)
            pg_carry_column_rules(conn, live.name, live_tables[live.name], shadow_sql)
            for index in pg_hand_made_indexes(
                conn, live_tables[live.name], self._known_indexes(conn, live), warn=warn
            ):
                name = self._carry_name(index.name)
                statement = index.on(shadow_sql, quote(name))
                make_or_stop(conn, live.name, statement, f"index {index.name}")
            found = pg_hand_made_constraints(
                conn, live_tables[live.name], self._known_constraints(conn, live)
            )
            constraints += [(live, constraint) for constraint in found]
        shadows = self._regclasses(conn)
        for live, constraint in sorted(constraints, key=lambda pair: pair[1].kind == "f"):
            name = quote(self._carry_name(constraint.name))
            shadow_sql = table_sql(conn, self.mapping[live])
            if outside is not None and constraint.kind == "f":
                if constraint.references not in shadows:
                    outside.append(OutsideKey(live.name, constraint, shadow_sql, name))
                    continue
            pg_make_constraint(conn, live.name, constraint, shadow_sql, name, shadows)

    def _carry_name(self, name: str) -> str:
        """The shadow name of an index or constraint made by hand, remembered for the swap."""
        shadow = fitted(name, self.suffix, PG_NAME_LIMIT)
        self._carried[shadow] = name
        return shadow

    def _known_indexes(self, conn: sa.Connection, live: sa.Table) -> set[str]:
        """The live names of the shadow's indexes."""
        shadow = self.mapping[live]
        return {
            self._live_name(conn, name, live)
            for name, kind in pg_dependents(conn, shadow)
            if kind == "INDEX"
        }

    def _known_constraints(self, conn: sa.Connection, live: sa.Table) -> set[str]:
        """The names of the live table's constraints the shadow has: by the live names of
        the shadow's, else by definition (a name the database derived from a long table
        name may not be the one :meth:`_live_name` derives)."""
        live_rows = pg_constraint_definitions(conn, table_sql(conn, live))
        known = set()
        unpaired = []
        live_names = {name for name, _ in live_rows}
        for name, definition in pg_constraint_definitions(
            conn, table_sql(conn, self.mapping[live])
        ):
            live_name = self._live_name(conn, name, live)
            if live_name in live_names:
                known.add(live_name)
                continue
            for live_reg, shadow_reg in self._regclasses(conn).items():
                definition = definition.replace(
                    f" REFERENCES {shadow_reg}(", f" REFERENCES {live_reg}("
                )
            unpaired.append(definition)
        for name, definition in live_rows:
            if name not in known and definition in unpaired:
                unpaired.remove(definition)
                known.add(name)
        return known

    def _regclasses(self, conn: sa.Connection) -> dict[str, str]:
        """Each live table's name as regclass writes it -> its shadow's."""
        names = {}
        for live, shadow in self.mapping.items():
            pair = conn.exec_driver_sql(
                "SELECT to_regclass(%(live)s)::text, to_regclass(%(shadow)s)::text",
                {"live": table_sql(conn, live), "shadow": table_sql(conn, shadow)},
            ).one()
            if pair[0] is not None and pair[1] is not None:
                names[str(pair[0])] = str(pair[1])
        return names
