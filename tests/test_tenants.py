"""DESIGN invariant 6, first half: a query for tenant A never returns tenant B's rows, by
key, by list or through a declared query, cached or not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.log import EventLog
from projections.api import Event, Projection, Tx, on
from projections.cache import MemoryCache
from projections.queries import Reader, query
from projections.query_reader import QueryError
from projections.query_service import Queries
from projections.replay import Replayer, ReplayOptions
from tests.cli_helpers import run_cli, write_config
from tests.projection_fixtures import append_tenant_events, engine_on

metadata = sa.MetaData()
accounts = sa.Table(
    "tenant_accounts",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text, nullable=False, index=True),
    sa.Column("owner", sa.Text, nullable=False, index=True),
    sa.Column("balance", sa.BigInteger, nullable=False),
)
currencies = sa.Table(  # shared by every tenant: no tenant column
    "tenant_currencies",
    metadata,
    sa.Column("code", sa.Text, primary_key=True),
)


class TenantAccounts(Projection):
    name = "tenant_accounts"
    tables = (accounts, currencies)
    tenant_column = "tenant"
    shared_tables = (currencies,)
    key_tags = {"tenant_accounts": "account:{account}"}

    @on("bank", "Opened")
    def opened(self, event: Event[dict], tx: Tx) -> None:
        row = {"account": event.aggregate_id, "tenant": event.tenant, "balance": 0}
        tx.upsert(accounts, {**row, "owner": event.payload["owner"]})
        tx.upsert(currencies, {"code": "EUR"})

    @query("by_owner", tags=lambda owner: [f"owner:{owner}"])
    def by_owner(self, read: Reader, owner: str) -> list[dict[str, Any]]:
        return read.find(accounts, owner=owner)

    @query("raw")
    def raw(self, read: Reader) -> list[dict[str, Any]]:
        return read.rows(sa.select(accounts))


ledger = sa.Table(  # the tenant column may hold NULL: only the engine keeps it filled
    "tenant_ledger",
    metadata,
    sa.Column("entry", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
)


class TenantLedger(Projection):
    """A handler that writes the tenant its payload names, or none."""

    name = "tenant_ledger"
    tables = (ledger,)
    tenant_column = "tenant"

    @on("bank", "Booked")
    def booked(self, event: Event[dict], tx: Tx) -> None:
        row = {"entry": event.aggregate_id, "amount": event.payload["amount"]}
        if "tenant" in event.payload:
            row["tenant"] = event.payload["tenant"]
        tx.upsert(ledger, row)


def _log(log: EventLog, events: list[tuple[str, str, str]]) -> None:
    """``(tenant, account, owner)`` accounts opened, in one source."""
    append_tenant_events(
        log, [(tenant, account, "Opened", {"owner": owner}) for tenant, account, owner in events]
    )


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_query_for_one_tenant_never_returns_anothers_rows(
    kind: str, database_for: Callable[[str], str], tmp_path: Path
) -> None:
    url = database_for(kind)
    with engine_on(url, [TenantAccounts()], cache=MemoryCache()) as (log, store, engine):
        _log(log, [("acme", "a1", "ann"), ("globex", "g1", "ann"), ("globex", "g2", "bob")])
        engine.catch_up(deadline=30)
        queries = Queries.from_engine(engine, log.engine)
        for _ in range(2):  # the second time from the cache, where a query caches
            assert queries.get("tenant_accounts", "a1", tenant="acme").value["owner"] == "ann"
            assert queries.get("tenant_accounts", "a1", tenant="globex").value is None
            found = queries.run("tenant_accounts", "by_owner", "ann", tenant="globex").value
            assert [row["account"] for row in found] == ["g1"]
            found = queries.run("tenant_accounts", "by_owner", "ann", tenant="acme").value
            assert [row["account"] for row in found] == ["a1"]
        page = queries.list("tenant_accounts", {"owner": "ann"}, tenant="acme", limit=1)
        assert [row["account"] for row in page.rows] == ["a1"] and page.next is None
        shared = queries.get("tenant_accounts", "EUR", table="tenant_currencies", tenant="acme")
        assert shared.value == {"code": "EUR"}  # a table without the column is everyone's

        with pytest.raises(QueryError, match="keeps rows per tenant: give the tenant"):
            queries.get("tenant_accounts", "a1")
        with pytest.raises(QueryError, match="keeps rows per tenant: give the tenant"):
            queries.reader("tenant_accounts")  # no way around the filter
        assert queries.reader("tenant_accounts", "globex").get(accounts, "a1") is None
        with pytest.raises(QueryError, match="cannot be limited to one"):
            queries.run("tenant_accounts", "raw", tenant="acme")

        config = write_config(
            tmp_path / "readmodel.toml",
            {"store": {"url": url}, "projections": ["tests.test_tenants"]},
        )
        cli = run_cli(
            ["query", "tenant_accounts", "-w", "owner=ann", "--tenant", "globex", "--json"]
            + ["--config", str(config)]
        )
        assert cli.exit_code == 0, cli.output
        assert [row["account"] for row in json.loads(cli.stdout)["rows"]] == ["g1"]
        missing = run_cli(["query", "tenant_accounts", "a1", "--config", str(config)])
        assert missing.exit_code == 2 and "--tenant" in missing.stderr


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_rows_are_written_in_the_events_tenant_or_the_event_is_parked(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """A row written without the tenant column gets the event's tenant (a handler that
    forgot it wrote NULL: a row no tenant can read); a row naming another tenant, or an
    event without a tenant, is the handler's failure: parked, the rest applied."""
    projection = TenantLedger()
    options = {"max_attempts": 2, "retry_backoff": 0.001}
    with engine_on(database_for(kind), [projection], **options) as (log, store, engine):
        append_tenant_events(
            log,
            [
                ("acme", "e1", "Booked", {"amount": 5}),
                ("globex", "e2", "Booked", {"amount": 7, "tenant": "globex"}),
                ("acme", "e3", "Booked", {"amount": 9, "tenant": "globex"}),
                (None, "e4", "Booked", {"amount": 1}),
                ("acme", "e5", "Booked", {"amount": 2}),
            ],
        )
        engine.catch_up(deadline=30)

        def rows() -> list[tuple[Any, ...]]:
            with log.engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.select(ledger).order_by(ledger.c.entry))]

        live = rows()
        assert live == [("e1", "acme", 5), ("e2", "globex", 7), ("e5", "acme", 2)]
        parked = {p.aggregate_id: p.reason for p in engine.parked("tenant_ledger")}
        assert sorted(parked) == ["e3", "e4"]
        assert (
            "TenantError(\"tenant_ledger: a row of 'tenant_ledger' names another tenant than "
            "the event's ('acme') in 'tenant' (Booked at bank:3; the value is not shown)"
            in parked["e3"]
        )
        assert (
            "tenant_ledger: Booked at bank:4 has no tenant, so its row of 'tenant_ledger' "
            "cannot be placed (tenant column 'tenant')" in parked["e4"]
        )

        queries = Queries.from_engine(engine, log.engine)
        assert queries.get("tenant_ledger", "e1", tenant="acme").value["amount"] == 5
        assert queries.get("tenant_ledger", "e1", tenant="globex").value is None
        assert queries.get("tenant_ledger", "e3", tenant="globex").value is None
        found = queries.list("tenant_ledger", {}, tenant="acme").rows
        assert [row["entry"] for row in found] == ["e1", "e5"]

        # A rebuild holds the handlers to the same rule.
        summary = Replayer(engine.reader, projection, store).run(ReplayOptions(skip_errors=True))
        assert sorted(s.position for s in summary.skipped) == [3, 4]
        assert rows() == live


# -- invariant 6, second half: tenant credentials stored encrypted, never logged -----------


def test_a_tenant_source_given_encrypted_is_read_and_its_password_never_shown(
    pg_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant database's DSN sits in the config file as ``fernet:<token>`` (made by
    ``readmodel secret encrypt``); with READMODEL_SECRET_KEY the relay reads that database,
    and neither the password nor the token appear in what readmodel prints."""
    from tests.outbox_helpers import init_outbox, insert_events

    made = run_cli(["secret", "key"])
    assert made.exit_code == 0
    key = made.stdout.strip()
    monkeypatch.setenv("READMODEL_SECRET_KEY", key)
    password = "Tenant-Pa55word"
    tenant_dsn = sa.make_url(pg_database()).set(password=password)
    plain = tenant_dsn.render_as_string(hide_password=False)
    encrypted = run_cli(["secret", "encrypt"], input=plain)
    assert encrypted.exit_code == 0, encrypted.output
    token = encrypted.stdout.strip()
    assert token.startswith("fernet:") and password not in token
    store = f"sqlite:///{tmp_path / 'store.db'}"
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "store": {"url": store},
            "sources": {"acme": {"url": token, "tenant": "acme", "columns": {"tenant": ""}}},
        },
    )
    assert password not in config.read_text()

    from config import load_settings

    settings = load_settings(config)
    assert settings.sources["acme"].url == plain
    init_outbox(settings.sources["acme"], "acme")
    engine = sa.create_engine(plain.replace("postgresql://", "postgresql+psycopg://"))
    insert_events(engine, [("account", "a1", "Opened", {"owner": "ann"})])
    engine.dispose()
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    for command in (["relay", "--once", "--log-level", "debug"], ["status", "--json"]):
        result = run_cli([*command, "--config", str(config)])
        assert result.exit_code == 0, result.output
        shown = result.stdout + result.stderr
        assert password not in shown and token not in shown
    log = EventLog(store)
    try:
        assert [(e.tenant, e.aggregate_id) for e in log.read("acme")] == [("acme", "a1")]
    finally:
        log.close()

    monkeypatch.setenv("READMODEL_SECRET_KEY", run_cli(["secret", "key"]).stdout.strip())
    wrong = run_cli(["status", "--config", str(config)])
    assert wrong.exit_code == 2
    assert "sources.acme.url" in wrong.stderr and "cannot decrypt" in wrong.stderr
    monkeypatch.delenv("READMODEL_SECRET_KEY")
    missing = run_cli(["status", "--config", str(config)])
    assert missing.exit_code == 2 and "needs its key in READMODEL_SECRET_KEY" in missing.stderr
    for result in (wrong, missing):
        assert password not in result.output + result.stderr


def test_a_tenant_projection_with_a_table_lacking_the_column_is_refused() -> None:
    """A table without the tenant column was read by every tenant without a word (the
    column named differently, say): it must be listed as shared to be."""
    notes = sa.Table(
        "tenant_notes",
        sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text),
    )
    with pytest.raises(TypeError, match="table 'tenant_notes' has no tenant column 'tenant'"):

        class Notes(Projection):
            name = "tenant_notes"
            tables = (notes,)
            tenant_column = "tenant"


def test_a_tenant_read_waiting_for_an_event_learns_nothing_of_it(
    database_for: Callable[[str], str],
) -> None:
    """The wait's error described the awaited event (type, aggregate id, a handler's
    error): a token is a position anyone can guess, and the event may be another tenant's."""
    from projections.consistency import ConsistencyTimeout

    with engine_on(database_for("postgresql"), [TenantAccounts()]) as (log, store, engine):
        _log(log, [("globex", "globex-vip-7", "bob")])  # logged, not applied
        queries = Queries.from_engine(engine, log.engine)
        with pytest.raises(ConsistencyTimeout) as waited:
            queries.get("tenant_accounts", "a1", tenant="acme", wait_for="bank:1", timeout=0.2)
        assert "globex" not in str(waited.value) and "Opened" not in str(waited.value)
        assert "has not applied the event awaited by" in str(waited.value)
