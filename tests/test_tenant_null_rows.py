"""A row with a NULL tenant, as a readmodel that let a handler leave the tenant column out
wrote it, holds a key an event of a tenant now writes: the upsert is refused (the row's
other columns may be any tenant's) and the event parked, but its reason called the row
"another tenant's" and told the operator to deploy a fix and retry, which changes nothing.
It now names a row without a tenant and says what does: rebuild from the event log."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on
from projections.document_replay import DocumentReplayer
from projections.query_service import Queries
from projections.replay import Replayer, ReplayOptions
from tests.document_bank_helpers import Bank, opened
from tests.document_query_fixtures import DocAccounts
from tests.projection_fixtures import append_tenant_events, engine_on

metadata = sa.MetaData()
wallets = sa.Table(  # the tenant column may hold NULL: an older readmodel left it so
    "null_wallets",
    metadata,
    sa.Column("wallet", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text, index=True),
    sa.Column("balance", sa.BigInteger, nullable=False),
)


class NullWallets(Projection):
    name = "null_wallets"
    tables = (wallets,)
    tenant_column = "tenant"

    @on("bank", "Funded")
    def funded(self, event: Event[dict], tx: Tx) -> None:
        wallet = tx.get(wallets, event.aggregate_id) or {"balance": 0}
        amount = event.payload["amount"]
        tx.upsert(wallets, {"wallet": event.aggregate_id, "balance": wallet["balance"] + amount})


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_row_without_a_tenant_is_named_so_and_a_rebuild_places_it(
    kind: str, database_for: Callable[[str], str]
) -> None:
    projection = NullWallets()
    options = {"max_attempts": 2, "retry_backoff": 0.001}
    with engine_on(database_for(kind), [projection], **options) as (log, store, engine):
        with log.engine.begin() as conn:  # what the older readmodel left
            conn.execute(sa.insert(wallets), [{"wallet": "w1", "tenant": None, "balance": 7}])
        append_tenant_events(
            log,
            [("acme", "w1", "Funded", {"amount": 5}), ("acme", "w2", "Funded", {"amount": 3})],
            aggregate_type="wallet",
        )
        engine.catch_up(deadline=30)

        [parked] = engine.parked("null_wallets")
        assert parked.aggregate_id == "w1"
        assert parked.reason == (
            "tenant refused, not retried: TenantError(\"null_wallets: a row of 'null_wallets' "
            "written by Funded at bank:1 has the key of a row without a tenant (NULL in "
            "'tenant', as a readmodel before tenant checks left it when a handler did not "
            "write the column; the key is not shown): not overwritten, as its other columns "
            "may be any tenant's\"); rebuild the projection from the event log, which writes "
            "every row in its event's tenant and applies this event again: `readmodel replay "
            "null_wallets --yes` (`readmodel parked skip` drops the event instead)"
        )
        assert "another tenant" not in parked.reason
        queries = Queries.from_engine(engine, log.engine)
        assert queries.get("null_wallets", "w1", tenant="acme").value is None

        Replayer(engine.reader, projection, store).run(ReplayOptions())
        assert queries.get("null_wallets", "w1", tenant="acme").value == {
            "wallet": "w1",
            "tenant": "acme",
            "balance": 5,
        }
        assert queries.get("null_wallets", "w2", tenant="acme").value["balance"] == 3
        assert engine.parked("null_wallets") == []
        with log.engine.connect() as conn:
            assert (
                conn.execute(sa.select(sa.func.count()).where(wallets.c.tenant.is_(None))).scalar()
                == 0
            )


@pytest.mark.parametrize("left", [{}, {"tenant": None}])
def test_a_document_without_a_tenant_is_named_so_and_a_rebuild_places_it(
    bank: Bank, left: dict[str, None]
) -> None:
    """The same of a document without the tenant field (or null there): it was retried as
    "another tenant's document", which a later event may free, then parked."""
    bank.append([opened("acme", "a0", "ann")])  # the collections of the live generation
    old = {"_id": "a1", "owner": "old", "balance": 7, **left}
    bank.store.database[bank.physical_accounts()].insert_one(old)
    bank.append([opened("acme", "a1", "ann")])

    [parked] = bank.engine.parked("doc_accounts")
    assert (parked.aggregate_id, parked.attempts) == ("a1", 1)  # at once: no retry frees it
    assert parked.reason == (
        "tenant refused, not retried: TenantError(\"doc_accounts: tenant 'acme' cannot write "
        "the document of 'doc_accounts' with _id 'a1': a document without a tenant holds that "
        "_id (no 'tenant', as a readmodel before tenant checks left it when a handler did "
        "not write the field): not overwritten, as its other fields may be any tenant's\"); "
        "rebuild the projection from the event log, which writes every document in its "
        "event's tenant and applies this event again: `readmodel replay doc_accounts --yes` "
        "(`readmodel parked skip` drops the event instead)"
    )
    assert bank.queries.get("doc_accounts", "a1", tenant="acme").value is None

    replayer = DocumentReplayer(
        bank.engine.reader, DocAccounts(), bank.store, cache=bank.engine.cache
    )
    replayer.run(ReplayOptions())
    found = bank.queries.get("doc_accounts", "a1", tenant="acme").value
    assert (found["owner"], found["tenant"], found["balance"]) == ("ann", "acme", 0)
    assert bank.engine.parked("doc_accounts") == []


def test_a_tenant_errors_remedy_survives_pickling() -> None:
    """As Dramatiq and multiprocessing pass a handler's exception on."""
    import pickle

    from projections.api import TenantError

    error = pickle.loads(pickle.dumps(TenantError("no tenant", remedy="rebuild it")))
    assert (str(error), error.for_good, error.remedy) == ("no tenant", True, "rebuild it")
