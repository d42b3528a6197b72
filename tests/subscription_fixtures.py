"""Projections subscribed to names a configuration may or may not feed
(tests/test_unknown_subscriptions.py): a typo of ``bank``, a member of a tenant registry's
group, a static group, a source only the event log has events of, and a source another
deployment relays."""

from __future__ import annotations

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on


def _counts(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("events", sa.BigInteger, nullable=False),
    )


class _Counts(Projection):
    def count(self, event: Event[dict], tx: Tx) -> None:
        table = type(self).tables[0]
        row = tx.get(table, event.aggregate_id)
        tx.upsert(table, {"id": event.aggregate_id, "events": (row["events"] if row else 0) + 1})


class Typo(_Counts):
    """Reads ``bank``, and ``bnak`` by mistake."""

    name = "typo_counts"
    tables = (_counts("typo_counts"),)

    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Tx) -> None:
        self.count(event, tx)

    @on("bnak", "Withdrawn")
    def withdrawn(self, event: Event[dict], tx: Tx) -> None:
        self.count(event, tx)


class AcmeSales(_Counts):
    """One member of the registry group ``pos``, by its own name."""

    name = "acme_sales"
    tables = (_counts("acme_sales"),)

    @on("pos:acme", "SaleRecorded")
    def recorded(self, event: Event[dict], tx: Tx) -> None:
        self.count(event, tx)


class AllSales(_Counts):
    """The registry group ``pos`` and the static group ``shop``."""

    name = "all_sales"
    tables = (_counts("all_sales"),)

    @on("pos", "SaleRecorded")
    def recorded(self, event: Event[dict], tx: Tx) -> None:
        self.count(event, tx)

    @on("shop", "OrderPlaced")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        self.count(event, tx)


class ShopTypo(_Counts):
    """``shop:acmee``: a member of the static group ``shop`` its sources do not list."""

    name = "shop_typo"
    tables = (_counts("shop_typo"),)

    @on("shop:acmee", "OrderPlaced")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        self.count(event, tx)


class Legacy(_Counts):
    """A source retired from the configuration, whose events the log keeps."""

    name = "legacy_counts"
    tables = (_counts("legacy_counts"),)

    @on("legacy", "Deposited")
    def deposited(self, event: Event[dict], tx: Tx) -> None:
        self.count(event, tx)


class Split(_Counts):
    """Reads ``bank`` (relayed by its own deployment) and ``payments`` (relayed by another)."""

    name = "split_counts"
    tables = (_counts("split_counts"),)

    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Tx) -> None:
        self.count(event, tx)

    @on("payments", "PaymentCaptured")
    def captured(self, event: Event[dict], tx: Tx) -> None:
        self.count(event, tx)
