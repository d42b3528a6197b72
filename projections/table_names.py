"""A projection's tables are told apart by name alone: its batch's pending writes and row
locks (:mod:`projections.sql_tx`), the driver-level plans' (:mod:`projections.sql_plans`), a
replay's shadows and live tables (:mod:`projections.shadow`) and the read model's queries
are keyed by the table's name, not its schema. Two tables of one name in different schemas
(``a.orders``, ``b.orders``) would be taken for one (a ``KeyError`` at apply): such a
projection is refused when its class is defined."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa


def check_table_names(owner: str, tables: Iterable[sa.Table]) -> None:
    """Raise ``TypeError`` naming the first two distinct tables of ``owner`` sharing a name."""
    seen: dict[str, sa.Table] = {}
    for table in tables:
        other = seen.setdefault(table.name, table)
        if other is not table:
            raise TypeError(
                f"{owner}: tables {_full(other)} and {_full(table)} share the name "
                f"{table.name!r}: a projection tells its tables apart by name alone (its "
                f"writes, row locks, queries and replays), not by schema; rename one"
            )


def _full(table: sa.Table) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name
