"""Document projections read like table ones, on a real MongoDB-wire server and Redis:
declared ``@query`` functions cached under their tags and invalidated by later events, a
``tenant_column`` that places every document in its event's tenant (or parks the event) and
limits every read to one tenant, and typed ``--where`` values from the command line (keys
and pages: tests/test_document_keys.py)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from bson import Decimal128, ObjectId

from outbox.envelope import Envelope
from projections.api import TenantError
from projections.document_generations import collections_at, generation_of
from projections.document_replay import DocumentReplayer
from projections.document_write_errors import TenantConflict, handler_error
from projections.log_reader import LogReader
from projections.mongo_tx import DocumentTx
from projections.query_reader import QueryError
from projections.replay_types import ReplayOptions
from tests.cli_helpers import run_cli, write_config
from tests.document_bank_helpers import Bank, cached_entries, opened
from tests.document_query_fixtures import DocAccounts


def test_declared_queries_are_cached_in_redis_and_invalidated_by_a_later_event(
    bank: Bank, redis_key_prefix: str
) -> None:
    q = bank.queries
    bank.append([opened("acme", "a1", "ann"), opened("acme", "a2", "ann")])
    bank.append([("acme", "a2", "Deposited", {"amount": 5})])

    # tags from the arguments: cached at once, per tenant
    found = q.run("doc_accounts", "by_owner", "ann", tenant="acme").value
    assert [(d["_id"], d["balance"]) for d in found] == [("a2", 5), ("a1", 0)]
    entry = 'tenant:"acme":q:by_owner:[["ann"],[]]'
    assert entry in cached_entries(redis_key_prefix)
    assert q.run("doc_accounts", "by_owner", "ann", tenant="acme").value == found

    # tags from the result: the first read teaches them, the second is cached
    first = q.run("doc_accounts", "first_of", "ann", tenant="acme").value
    assert (first["_id"], first["balance"]) == ("a1", 0)
    learned = 'tenant:"acme":q:first_of:[["ann"],[]]'
    assert learned not in cached_entries(redis_key_prefix)
    assert q.run("doc_accounts", "first_of", "ann", tenant="acme").value == first
    assert learned in cached_entries(redis_key_prefix)

    # get by _id under key_tags, kept per tenant
    assert q.get("doc_accounts", "a1", tenant="acme").value["balance"] == 0
    assert 'tenant:"acme":get:doc_accounts:["a1"]' in cached_entries(redis_key_prefix)

    bank.append([("acme", "a1", "Deposited", {"amount": 100})])
    assert not {entry, learned} & cached_entries(redis_key_prefix)
    fresh = q.run("doc_accounts", "by_owner", "ann", tenant="acme").value
    assert [(d["_id"], d["balance"]) for d in fresh] == [("a1", 100), ("a2", 5)]
    assert q.run("doc_accounts", "first_of", "ann", tenant="acme").value["balance"] == 100
    assert q.get("doc_accounts", "a1", tenant="acme").value["balance"] == 100


def test_a_read_for_one_tenant_never_returns_anothers_documents(bank: Bank) -> None:
    q = bank.queries
    bank.append(
        [
            opened("acme", "a1", "ann"),
            opened("globex", "g1", "ann"),
            opened("globex", "g2", "bob"),
        ]
    )
    for _ in range(2):  # the second time from the cache, where a read caches
        assert q.get("doc_accounts", "a1", tenant="acme").value["owner"] == "ann"
        assert q.get("doc_accounts", "a1", tenant="globex").value is None
        found = q.run("doc_accounts", "by_owner", "ann", tenant="globex").value
        assert [d["_id"] for d in found] == ["g1"]
        found = q.run("doc_accounts", "by_owner", "ann", tenant="acme").value
        assert [d["_id"] for d in found] == ["a1"]
        assert q.run("doc_accounts", "first_of", "ann", tenant="globex").value["_id"] == "g1"
    page = q.list("doc_accounts", {"owner": "ann"}, tenant="acme", limit=1)
    assert [d["_id"] for d in page.rows] == ["a1"] and page.next is None
    everything = q.list("doc_accounts", {}, tenant="globex").rows
    assert [(d["_id"], d["tenant"]) for d in everything] == [("g1", "globex"), ("g2", "globex")]
    # a filter naming another tenant does not lift the tenant's own
    assert q.list("doc_accounts", {"tenant": "acme"}, tenant="globex").rows == []
    shared = q.get("doc_accounts", "EUR", table="doc_currencies", tenant="acme").value
    assert shared == {"_id": "EUR"}  # a shared collection is everyone's
    assert q.run("doc_accounts", "currency", "EUR", tenant="globex").value == {"_id": "EUR"}

    for read in (
        lambda: q.get("doc_accounts", "a1"),
        lambda: q.list("doc_accounts", {}),
        lambda: q.run("doc_accounts", "by_owner", "ann"),
        lambda: q.reader("doc_accounts"),
    ):
        with pytest.raises(QueryError, match="keeps documents per tenant: give the tenant"):
            read()
    assert q.reader("doc_accounts", "globex").get("doc_accounts", "a1") is None
    with pytest.raises(QueryError, match="reads them with get, first or find"):
        q.run("doc_accounts", "raw", tenant="acme")


def test_documents_are_written_in_the_events_tenant_or_the_event_is_parked(
    bank: Bank,
) -> None:
    """A document written without the tenant field gets the event's tenant; one naming
    another tenant, or an event without a tenant, is the handler's failure: parked, the rest
    applied; a rebuild holds the handlers to the same rule."""
    bank.append(
        [
            opened("acme", "e1", "ann"),
            ("globex", "e2", "Opened", {"owner": "bob", "tenant": "globex"}),
            ("acme", "e3", "Opened", {"owner": "cy", "tenant": "globex"}),
            (None, "e4", "Opened", {"owner": "di"}),
            opened("acme", "e5", "ed"),
        ]
    )

    def documents() -> list[tuple[str, str]]:
        database = bank.store.database
        physical = collections_at(DocAccounts(), generation_of(database, "doc_accounts"))
        found = database[physical["doc_accounts"]].find().sort("_id", 1)
        return [(d["_id"], d["tenant"]) for d in found]

    live = documents()
    assert live == [("e1", "acme"), ("e2", "globex"), ("e5", "acme")]
    parked = {p.aggregate_id: p.reason for p in bank.engine.parked("doc_accounts")}
    assert sorted(parked) == ["e3", "e4"]
    assert (
        "TenantError(\"doc_accounts: a document of 'doc_accounts' names another tenant than "
        "the event's ('acme') in 'tenant' (Opened at bank:3; the value is not shown)"
        in parked["e3"]
    )
    assert "globex" not in parked["e3"]  # any field's value may land there: a hidden one
    assert (
        "doc_accounts: Opened at bank:4 has no tenant, so its document of 'doc_accounts' "
        "cannot be placed (tenant field 'tenant')" in parked["e4"]
    )
    assert bank.queries.get("doc_accounts", "e3", tenant="globex").value is None

    replayer = DocumentReplayer(LogReader(bank.log), DocAccounts(), bank.store, retire_after=0.0)
    summary = replayer.run(ReplayOptions(skip_errors=True))
    assert sorted(s.position for s in summary.skipped) == [3, 4]
    assert generation_of(bank.store.database, "doc_accounts") == 1
    assert documents() == live
    assert [d["_id"] for d in bank.queries.list("doc_accounts", {}, tenant="acme").rows] == [
        "e1",
        "e5",
    ]


def test_readmodel_query_types_where_values_and_runs_document_queries(
    bank: Bank, tmp_path: Path
) -> None:
    bank.append([opened("acme", "a1", "ann"), opened("acme", "a2", "ann")])
    bank.append([("acme", "a1", "Deposited", {"amount": 5})])
    store = {"url": bank.log.engine.url.render_as_string(hide_password=False)}
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.document_query_fixtures:DocAccounts"],
            "store": store,
            "stores": {"docs": {"url": bank.url}},
        },
    )
    c = ["--tenant", "acme", "--json", "--config", str(config)]

    def ids(*args: str) -> list[str]:
        done = run_cli(["query", "doc_accounts", *args, *c])
        assert done.exit_code == 0, done.output
        return [d["_id"] for d in json.loads(done.stdout)["rows"]]

    assert ids("--where", "balance:=5") == ["a1"]
    assert ids("--where", "balance=5") == []  # text: "5" is not 5 to MongoDB
    assert ids("--where", 'owner:="ann"', "-w", "balance:=0") == ["a2"]
    named = run_cli(["query", "doc_accounts", "--name", "with_balance", "-w", "balance=5", *c])
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout) == {"result": ["a1"], "stale": False}
    got = run_cli(["query", "doc_accounts", "a1", *c])
    assert got.exit_code == 0 and json.loads(got.stdout)["row"]["balance"] == 5

    refused = {
        ("-w", "balance:=five"): "--where balance:=five: not JSON",
        ("-w", 'balance:={"$gt": 1}'): "an object with $ keys (an operator) is refused",
        ("-w", "$where=1"): "--where $where: a $ name is an operator",
        ("-w", "balance:=1", "-w", "balance=1"): "--where balance: given twice",
    }
    for args, message in refused.items():
        done = run_cli(["query", "doc_accounts", *args, *c])
        assert done.exit_code == 2 and message in done.stderr, (args, done.output)
    untenanted = run_cli(["query", "doc_accounts", "a1", "--config", str(config)])
    assert untenanted.exit_code == 2 and "--tenant" in untenanted.stderr


def _envelope(tenant: str | None, position: int) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4().hex,
        source="bank",
        tenant=tenant,
        aggregate_type="account",
        aggregate_id="x",
        event_type="Opened",
        payload={},
        position=position,
    )


def test_a_handlers_reads_and_writes_are_of_its_events_tenant(bank: Bank) -> None:
    """Two tenants' documents with one ``_id``: within a batch each tenant sees its own
    write only, a delete removes only its own, and a write of an ``_id`` another tenant's
    document holds is refused with a TenantError naming the collection and the ``_id``."""
    bank.append([opened("acme", "a1", "ann")])
    store = bank.store
    physical = collections_at(DocAccounts(), generation_of(store.database, "doc_accounts"))
    with pytest.raises(TenantConflict) as refused, store.transaction() as session:
        tx = DocumentTx(store.database, session, physical, projection=DocAccounts())
        tx.event = _envelope("globex", 10)
        assert tx.get("doc_accounts", "a1") is None  # acme's, not globex's
        assert tx.find("doc_accounts", owner="ann") == []
        tx.prefetch("doc_accounts", ["a1"])
        assert tx.get("doc_accounts", "a1") is None
        tx.upsert("doc_accounts", {"_id": "b1", "owner": "bob"})
        tx.event = _envelope("acme", 11)
        assert tx.get("doc_accounts", "b1") is None  # globex's pending write
        tx.upsert("doc_accounts", {"_id": "b1", "owner": "cy"})
        tx.event = _envelope("globex", 12)
        assert tx.get("doc_accounts", "b1")["owner"] == "bob"
        tx.delete("doc_accounts", "b1")  # globex's: acme's b1 stays
        tx.event = _envelope("acme", 13)
        assert tx.get("doc_accounts", "b1")["owner"] == "cy"
        assert tx.get("doc_accounts", "a1")["owner"] == "ann"
        tx.event = _envelope(None, 14)
        with pytest.raises(TenantError, match="has no tenant, cannot read documents of"):
            tx.get("doc_accounts", "a1")
        assert tx.get("doc_currencies", "EUR") == {"_id": "EUR"}  # shared: everyone's
        tx.event = _envelope("globex", 15)
        tx.upsert("doc_accounts", {"_id": "a1", "owner": "eve"})  # acme's a1
        tx.flush()
    error = handler_error(refused.value)
    assert isinstance(error, TenantError)
    assert str(error) == (
        "doc_accounts: tenant 'globex' cannot write the document of 'doc_accounts' with _id "
        "'a1': another tenant's document holds that _id (give documents _ids unique across "
        "tenants, e.g. with the tenant in them)"
    )
    assert bank.queries.get("doc_accounts", "a1", tenant="acme").value["owner"] == "ann"

    # batch prefetch (before the handlers, no event) keeps each document for its tenant
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, physical, projection=DocAccounts())
        tx.prefetch("doc_accounts", ["a1", "zz"])
        tx.event = _envelope("globex", 16)
        assert tx.get("doc_accounts", "a1") is None and tx.get("doc_accounts", "zz") is None
        tx.event = _envelope("acme", 17)
        assert tx.get("doc_accounts", "a1")["owner"] == "ann"


def test_an_event_writing_another_tenants_id_is_parked_never_overwriting_it(
    bank: Bank,
) -> None:
    bank.append([opened("acme", "a1", "ann")])
    bank.append([opened("globex", "g1", "bob"), opened("globex", "a1", "bob")])
    bank.append([opened("acme", "s1", "ann"), opened("globex", "s1", "bob")])  # one batch
    assert bank.queries.get("doc_accounts", "a1", tenant="acme").value["owner"] == "ann"
    assert bank.queries.get("doc_accounts", "a1", tenant="globex").value is None
    assert bank.queries.get("doc_accounts", "g1", tenant="globex").value["owner"] == "bob"
    assert bank.queries.get("doc_accounts", "s1", tenant="acme").value["owner"] == "ann"
    parked = {(p.aggregate_id, p.position): p for p in bank.engine.parked("doc_accounts")}
    assert sorted(parked) == [("a1", 3), ("s1", 5)]
    for (key, _), entry in parked.items():
        assert entry.attempts == 2  # retried, then parked
        assert (
            f"handler failed 2 times: TenantError(\"doc_accounts: tenant 'globex' cannot write "
            f"the document of 'doc_accounts' with _id '{key}': another tenant's document holds "
            "that _id" in entry.reason
        ), entry.reason


def test_documents_are_read_json_ready_the_same_from_the_cache_or_not(bank: Bank) -> None:
    bank.append([opened("acme", "a1", "ann")])
    ref = ObjectId()
    bank.store.database[bank.physical_accounts()].update_one(
        {"_id": "a1"},
        {"$set": {"opened": dt.datetime(2026, 1, 2, 3, 4, 5), "limit": Decimal128("10.50")}}
        | {"$push": {"refs": ref}},
    )
    expected = {
        "_id": "a1",
        "owner": "ann",
        "balance": 0,
        "tenant": "acme",
        "opened": "2026-01-02T03:04:05+00:00",
        "limit": "10.50",
        "refs": [str(ref)],
    }
    q = bank.queries
    for _ in range(3):  # uncached, then (once the tags are learned) from the cache
        assert q.run("doc_accounts", "first_of", "ann", tenant="acme").value == expected
        assert q.run("doc_accounts", "by_owner", "ann", tenant="acme").value == [expected]
        assert q.get("doc_accounts", "a1", tenant="acme").value == expected
    assert q.list("doc_accounts", {"owner": "ann"}, tenant="acme").rows == [expected]
    reader = q.reader("doc_accounts", "acme")
    assert reader.get("doc_accounts", "a1") == expected
    assert reader.find("doc_accounts", limit=1) == [expected]


def test_find_limits_and_filter_values_no_document_holds(bank: Bank) -> None:
    bank.append([opened("acme", "a1", "ann"), opened("acme", "a2", "ann")])
    reader = bank.queries.reader("doc_accounts", "acme")
    assert reader.find("doc_accounts", limit=0) == []  # to the driver, limit(0) is none
    assert [d["_id"] for d in reader.find("doc_accounts", limit=1)] == ["a1"]
    with pytest.raises(QueryError, match=r"limit must not be negative \(got -1\)"):
        reader.find("doc_accounts", limit=-1)
    with pytest.raises(QueryError, match="cannot read doc_accounts by that filter"):
        reader.find("doc_accounts", balance=2**64)
    with pytest.raises(QueryError, match="cannot read doc_accounts by that filter"):
        bank.queries.list("doc_accounts", {"balance": object()}, tenant="acme")


def test_cli_json_numbers_match_documents_exactly(bank: Bank, tmp_path: Path) -> None:
    """A ``:=`` number with a fraction matches the double a JSON payload stored when that
    double is the number given, else the exact Decimal128; an integer past 64 bits is
    refused, naming the field."""
    bank.append([opened("acme", f"a{i}", "ann") for i in range(1, 5)])
    documents = bank.store.database[bank.physical_accounts()]
    for key, balance in {
        "a1": 12.5,
        "a2": 0.1,
        "a3": Decimal128("123456789012345678.91"),
        "a4": Decimal128("123456789012345678.90"),
    }.items():
        documents.update_one({"_id": key}, {"$set": {"balance": balance}})
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.document_query_fixtures:DocAccounts"],
            "store": {"url": bank.log.engine.url.render_as_string(hide_password=False)},
            "stores": {"docs": {"url": bank.url}},
        },
    )
    c = ["--tenant", "acme", "--json", "--config", str(config)]

    def ids(where: str) -> list[str]:
        done = run_cli(["query", "doc_accounts", "-w", where, *c])
        assert done.exit_code == 0, done.output
        return [d["_id"] for d in json.loads(done.stdout)["rows"]]

    assert ids("balance:=12.5") == ids("balance:=1.25e1") == ["a1"]
    assert ids("balance:=0.1") == ["a2"]
    assert ids("balance:=123456789012345678.91") == ["a3"]
    assert ids("balance:=[0.1]") == []
    big = run_cli(["query", "doc_accounts", "-w", "balance:=9223372036854775808", *c])
    assert big.exit_code == 2, big.output
    assert "--where balance:=9223372036854775808: 9223372036854775808 is out of range" in (
        " ".join(big.stderr.split())
    )
