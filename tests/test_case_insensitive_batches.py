"""Keys PostgreSQL finds one row and a batch cannot tell apart in Python: a ``citext`` key's
non-ASCII letters in another case (``'É'``, ``'é'``), a key column of a nondeterministic ICU
collation (``'A'``, ``'a'``). Two events of one batch writing them sent one upsert two rows of
one key, which PostgreSQL refuses ("ON CONFLICT DO UPDATE command cannot affect row a second
time"): the batch is applied event by event, as batches of one, and gives their rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from outbox.db import create_engine
from projections.api import Event, Projection, Tx, on
from tests.projection_fixtures import engine_on, log_events

metadata = sa.MetaData()
by_citext = sa.Table(
    "ci_citext_hits",
    metadata,
    sa.Column("name", postgresql.CITEXT, primary_key=True),
    sa.Column("hits", sa.Integer, nullable=False),
)
by_collation = sa.Table(
    "ci_collation_hits",
    metadata,
    sa.Column("name", sa.Text(collation="rm_case_insensitive"), primary_key=True),
    sa.Column("hits", sa.Integer, nullable=False),
)


class Hits(Projection):
    """``Seen`` counts a name in both tables."""

    name = "ci_hits"
    tables = (by_citext, by_collation)
    partitions = 1

    @on("shop", "Seen")
    def seen(self, event: Event[dict], tx: Tx) -> None:
        for name in event.payload["names"]:
            for table in self.tables:
                row = tx.get(table, name)
                tx.upsert(table, {"name": name, "hits": (row or {"hits": 0})["hits"] + 1})


def _run(url: str, names: list[Any], batch_size: int) -> Any:
    """Rows, parked events, checkpoints and head once events ``Seen`` of each of ``names``
    (a name, or a list of names one event writes) are applied in batches of ``batch_size``."""
    setup = create_engine(url)
    with setup.begin() as conn:
        conn.exec_driver_sql("CREATE EXTENSION citext")
        conn.exec_driver_sql(
            "CREATE COLLATION rm_case_insensitive "
            "(provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
        )
    setup.dispose()
    projection = Hits()
    with engine_on(
        url, [projection], batch_size=batch_size, max_attempts=2, retry_backoff=0.001
    ) as (
        log,
        store,
        engine,
    ):
        events = [
            (f"a{n}", "Seen", {"names": name if isinstance(name, list) else [name]})
            for n, name in enumerate(names)
        ]
        head = log_events(log, events)
        engine.catch_up(deadline=20)
        with log.engine.connect() as conn:
            rows = {
                table.name: sorted(tuple(r) for r in conn.execute(sa.select(table)))
                for table in projection.tables
            }
        return (
            rows,
            store.parked(projection.name),
            set(store.checkpoints(projection.name).values()),
            head,
        )


@pytest.mark.parametrize("names", [["É", "é", "x"], ["Ab", "aB", "x", "AB"]])
def test_keys_postgresql_merges_give_the_rows_of_batches_of_one(
    names: list[str], database_for: Callable[[str], str]
) -> None:
    alone = _run(database_for("postgresql"), names, 1)
    together = _run(database_for("postgresql"), names, 50)
    rows, parked, checkpoints, head = alone
    assert parked == [] and checkpoints == {head}
    assert rows["ci_citext_hits"] == sorted([(names[0], len(names) - 1), ("x", 1)])
    assert together == alone


def test_an_event_writing_two_keys_postgresql_merges_is_parked(
    database_for: Callable[[str], str],
) -> None:
    rows, parked, checkpoints, head = _run(database_for("postgresql"), ["x", ["É", "é"], "y"], 50)
    assert rows["ci_citext_hits"] == [("x", 1), ("y", 1)]
    assert [(p.aggregate_id, p.position) for p in parked] == [("a1", 2)]
    assert "cannot affect row a second time" in parked[0].reason, parked[0].reason
    assert checkpoints == {head}
