"""Projections named like what a rebuild of another derives (tests/test_replay_rebuild_names.py):
the checkpoints of ``last_deposit``'s rebuild (tests/replay_fixtures.py), its old table, a
generation of a document projection's collection; and one in another store."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()

deposit_marks = sa.Table(
    "deposit_marks",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
)
deposit_history = sa.Table(
    "last_deposit__old",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
)
dry_run = sa.Table(
    "last_deposit__dry_run",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
)
archived = sa.Table(
    "last_deposit__rebuild",
    sa.MetaData(),
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
)


class Deposited(BaseModel):
    amount: int
    seq: int


class _Marks(Projection):
    """The last seq per account."""

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        table = type(self).tables[0]
        tx.upsert(table, {"account": event.aggregate_id, "seq": event.payload.seq})


class RebuildCheckpoints(_Marks):
    name = "last_deposit__rebuild"
    tables = (deposit_marks,)


class OldTable(_Marks):
    name = "deposit_history"
    tables = (deposit_history,)


class DryRunTable(_Marks):
    name = "deposit_trials"
    tables = (dry_run,)


class ArchivedElsewhere(_Marks):
    """A table named like ``last_deposit``'s shadow, in a store of its own."""

    name = "deposit_archive"
    tables = (archived,)
    store = "archive"


class Inbox(Projection):
    name = "inbox"
    collections = ("inbox",)


class InboxCopies(Projection):
    name = "inbox_copies"
    collections = ("inbox__g2",)
