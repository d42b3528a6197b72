"""A slow projection for shutdown tests: each event sleeps, and its position is traced."""

from __future__ import annotations

import os
import time

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on
from tests.projection_fixtures import Deposited

metadata = sa.MetaData()

slow_totals = sa.Table(
    "slow_totals",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("last_seq", sa.Integer, nullable=False),
    sa.Column("violations", sa.Integer, nullable=False),
)


class Slow(Projection):
    """One lane; sleeps ``READMODEL_TEST_SLEEP`` seconds per event and appends the event's
    position to the file ``READMODEL_TEST_TRACE`` when it starts handling it."""

    name = "slow"
    tables = (slow_totals,)
    partitions = 1

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        trace = os.environ.get("READMODEL_TEST_TRACE")
        if trace:
            with open(trace, "a", encoding="utf-8") as handle:
                handle.write(f"{event.position}\n")
        time.sleep(float(os.environ.get("READMODEL_TEST_SLEEP", "0")))
        row = tx.get(slow_totals, event.aggregate_id) or {
            "account": event.aggregate_id,
            "events": 0,
            "last_seq": 0,
            "violations": 0,
        }
        tx.upsert(
            slow_totals,
            {
                "account": event.aggregate_id,
                "events": row["events"] + 1,
                "last_seq": event.payload.seq,
                "violations": row["violations"] + (event.payload.seq != row["last_seq"] + 1),
            },
        )
