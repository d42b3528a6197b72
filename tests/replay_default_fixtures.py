"""A projection whose table declares server defaults (one on an enum column) and NOT NULL,
for tests/test_replay_declared_columns.py: what a rebuild does with hand-made changes to
what the model declares."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()

account_mood = sa.Table(
    "account_mood",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("mood", sa.Enum("happy", "sad", name="mood"), server_default="happy"),
    sa.Column("label", sa.Text, nullable=False, server_default="plain"),
    sa.Column("seq", sa.Integer, nullable=False),
)


class Deposited(BaseModel):
    amount: int
    seq: int


class AccountMood(Projection):
    """One row per account; its mood and label are the table's defaults."""

    name = "account_mood"
    tables = (account_mood,)
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        tx.upsert(account_mood, {"account": event.aggregate_id, "seq": event.payload.seq})
