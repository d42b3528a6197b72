"""Document projections with declared queries and a tenant field, for
tests/test_document_queries.py (importable by the CLI through config)."""

from __future__ import annotations

from typing import Any

from projections.api import Event, Projection, on
from projections.queries import Reader, query


class DocAccounts(Projection):
    """Accounts as documents, each of one tenant, with a currency list every tenant reads.
    A handler writes the tenant the payload names (``tenant``), or leaves it to the store."""

    name = "doc_accounts"
    store = "docs"
    collections = ("doc_accounts", "doc_currencies")
    tenant_column = "tenant"
    shared_collections = ("doc_currencies",)
    key_tags = {"doc_accounts": "account:{_id}"}
    collection_indexes = {"doc_accounts": [("tenant", "owner")]}

    @on("bank", "Opened")
    def opened(self, event: Event[dict], tx: Any) -> None:
        payload = event.payload
        document = {"_id": event.aggregate_id, "owner": payload["owner"], "balance": 0}
        if "tenant" in payload:
            document["tenant"] = payload["tenant"]
        tx.upsert("doc_accounts", document)
        tx.upsert("doc_currencies", {"_id": "EUR"})
        tx.invalidate(f"owner:{payload['owner']}")

    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Any) -> None:
        document = tx.get("doc_accounts", event.aggregate_id)
        document["balance"] += event.payload["amount"]
        tx.upsert("doc_accounts", document)
        tx.invalidate(f"owner:{document['owner']}")

    @query("by_owner", tags=lambda owner: [f"owner:{owner}"])
    def by_owner(self, read: Reader, owner: str) -> list[dict[str, Any]]:
        return read.find("doc_accounts", owner=owner, order_by="-balance")

    @query("first_of", cache_tags=lambda document: [f"account:{document['_id']}"])
    def first_of(self, read: Reader, owner: str) -> dict[str, Any] | None:
        return read.first("doc_accounts", owner=owner)

    @query("with_balance")
    def with_balance(self, read: Reader, balance: int) -> list[str]:
        return [d["_id"] for d in read.find("doc_accounts", balance=balance)]

    @query("currency")
    def currency(self, read: Reader, code: str) -> dict[str, Any] | None:
        return read.get("doc_currencies", code)

    @query("raw")
    def raw(self, read: Reader) -> Any:
        return read.rows(None)
