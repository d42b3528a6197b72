"""Projections whose handler refuses a poison event while ``READMODEL_TEST_POISON`` is set,
for tests of replays meeting events an operator skipped (``readmodel parked skip``): one row
(or document) per applied event, and the last amount per aggregate. Applying an event again
changes nothing (``replay_safe``)."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()
applied = sa.Table(
    "op_skip_applied",
    metadata,
    sa.Column("event", sa.Text, primary_key=True),  # source:position
    sa.Column("aggregate", sa.Text, nullable=False),
    sa.Column("amount", sa.Integer, nullable=False),
)
last = sa.Table(
    "op_skip_last",
    metadata,
    sa.Column("aggregate", sa.Text, primary_key=True),
    sa.Column("amount", sa.Integer, nullable=False),
)


def refuse_poison(event: Event[dict]) -> None:
    if event.payload.get("poison") and os.environ.get("READMODEL_TEST_POISON") == "1":
        raise RuntimeError(f"poison {event.source}:{event.position}")


class OpSkipLedger(Projection):
    name = "op_skip_ledger"
    tables = (applied, last)
    partitions = 2
    replay_safe = True

    @on("shop", "Deposited")
    @on("bank", "Deposited")
    @on("pos", "Deposited")  # a group: a database per tenant, pos:acme, pos:globex...
    def deposited(self, event: Event[dict], tx: Tx) -> None:
        refuse_poison(event)
        amount = event.payload["amount"]
        key = f"{event.source}:{event.position}"
        tx.upsert(applied, {"event": key, "aggregate": event.aggregate_id, "amount": amount})
        tx.upsert(last, {"aggregate": event.aggregate_id, "amount": amount})


class OpSkipDocs(Projection):
    """:class:`OpSkipLedger` as MongoDB documents (store ``docs``)."""

    name = "op_skip_docs"
    store = "docs"
    collections = ("op_skip_applied", "op_skip_last")
    partitions = 2
    replay_safe = True

    @on("shop", "Deposited")
    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Any) -> None:
        refuse_poison(event)
        amount = event.payload["amount"]
        key = f"{event.source}:{event.position}"
        tx.upsert(
            "op_skip_applied", {"_id": key, "aggregate": event.aggregate_id, "amount": amount}
        )
        tx.upsert("op_skip_last", {"_id": event.aggregate_id, "amount": amount})


EVENTS = [  # (aggregate id, type, payload) of source "shop", positions 1..5
    ("a1", "Deposited", {"amount": 10}),
    ("a1", "Deposited", {"amount": 20, "poison": True}),
    ("a2", "Deposited", {"amount": 5}),
    ("a1", "Deposited", {"amount": 30}),
    ("a2", "Deposited", {"amount": 7}),
]
BANK = [("b1", "Deposited", {"amount": 1}), ("b2", "Deposited", {"amount": 2})]  # bank 1..2
LIVE = ["bank:1", "bank:2", "shop:1", "shop:3", "shop:4", "shop:5"]
"""What the live model holds once shop:2 is skipped: bank:2 is not (another source)."""
