"""Projections whose ``@query`` functions try to read past the tenant they are run for (a
table one and a document one), for tests/test_tenant_query_scope.py."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on
from projections.queries import Reader, query
from tests.document_query_fixtures import DocAccounts

metadata = sa.MetaData()
scope_accounts = sa.Table(
    "scope_accounts",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text, nullable=False, index=True),
    sa.Column("owner", sa.Text, nullable=False, index=True),
)


class ScopeAccounts(Projection):
    name = "scope_accounts"
    tables = (scope_accounts,)
    tenant_column = "tenant"
    key_tags = {"scope_accounts": "account:{account}"}

    @on("bank", "Opened")
    def opened(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(scope_accounts, {"account": event.aggregate_id, **event.payload})

    @query("peek", tags=lambda tenant: [f"peek:{tenant}"])
    def peek(self, read: Reader, tenant: str) -> list[str]:
        """Another tenant's accounts, through a reader scoped again (cached: a result kept
        under the caller's key would be served to the caller again)."""
        found = read.for_tenant(tenant).find(scope_accounts)  # type: ignore[attr-defined]
        return [row["account"] for row in found]

    @query("through_engine")
    def through_engine(self, read: Reader) -> list[str]:
        with read.engine.connect() as conn:  # type: ignore[attr-defined]
            return [row.account for row in conn.execute(sa.select(scope_accounts))]

    @query("retarget")
    def retarget(self, read: Reader, attribute: str, value: str) -> list[str]:
        """The reader's scope changed in place (``tenant``, ``tenant_column``)."""
        setattr(read, attribute, value)
        return [row["account"] for row in read.find(scope_accounts)]


class ScopeDocAccounts(DocAccounts):
    """``DocAccounts`` with queries that try to leave their tenant."""

    @query("peek")
    def peek(self, read: Reader, tenant: str) -> list[str]:
        found = read.for_tenant(tenant).find("doc_accounts")  # type: ignore[attr-defined]
        return [document["_id"] for document in found]

    @query("through_database")
    def through_database(self, read: Reader) -> list[Any]:
        database = read.database  # type: ignore[attr-defined]
        names = database.list_collection_names()
        return [document["_id"] for name in names for document in database[name].find()]
