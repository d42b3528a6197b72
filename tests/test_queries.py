"""Queries over projections filled through the real relay and engine: get by key, keyset
pages, declared queries, consistency tokens (wait, timeout, stale reads, parked events),
and ``readmodel query``."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import sqlalchemy as sa

from projections import (
    ConsistencyParked,
    ConsistencyTimeout,
    ConsistencyToken,
    Projection,
    Queries,
    QueryError,
)
from projections.cache import CacheHooks
from tests.cli_helpers import run_cli, write_config
from tests.shop_helpers import (
    SHOP_PROJECTIONS,
    Shop,
    order_placed,
    orders_placed,
    pipeline_running,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_get_and_list_pages_over_an_applied_projection(
    shop_factory: Callable[..., Shop], store_url: str
) -> None:
    shop = shop_factory(store_url)
    shop.write(orders_placed(40, 3))
    shop.write([("customer", "c1", "CustomerRegistered", {"email": "c1@x.io", "name": "Ann"})])
    shop.sync()
    q = shop.queries

    row = q.get("shop_orders", "o0007").value
    assert row == {
        "order_id": "o0007",
        "customer": "c1",
        "status": "placed",
        "amount": 7,
        "note": None,
    }
    assert q.get("shop_orders", "o9999").value is None
    customer = q.get("shop_orders", "c1", table="q_customers").value
    assert customer == {"customer": "c1", "email": "c1@x.io", "name": "Ann"}

    expected = sorted(f"o{i:04d}" for i in range(40) if i % 3 == 1)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = q.list("shop_orders", {"customer": "c1"}, after=cursor, limit=4)
        assert len(page.rows) <= 4
        assert all(r["customer"] == "c1" for r in page.rows)
        seen += [r["order_id"] for r in page.rows]
        pages += 1
        cursor = page.next
        if cursor is None:
            break
    assert seen == expected
    assert pages == -(-len(expected) // 4)

    everything = q.list("shop_orders", limit=100)
    assert [r["order_id"] for r in everything.rows] == sorted(f"o{i:04d}" for i in range(40))
    assert everything.next is None
    by_email = q.list("shop_orders", {"email": "c1@x.io"}, table="q_customers")
    assert [r["customer"] for r in by_email.rows] == ["c1"]


def test_query_errors_name_the_wrong_thing_and_the_known_ones(
    shop_factory: Callable[..., Shop], pg_database: Callable[[], str]
) -> None:
    shop = shop_factory(pg_database())
    shop.write(orders_placed(10, 2))
    shop.sync()
    q = shop.queries

    with pytest.raises(QueryError, match=r"unknown projection 'nope' \(known: shop_orders\)"):
        q.get("nope", "o1")
    with pytest.raises(QueryError, match=r"no table 'zzz' \(known: q_customers, q_orders\)"):
        q.get("shop_orders", "o1", table="zzz")
    with pytest.raises(QueryError, match=r"no column 'colour' \(columns: amount, customer, note"):
        q.list("shop_orders", {"colour": "red"})
    with pytest.raises(
        QueryError,
        match=r"column 'note' is not indexed \(indexed: customer, order_id\)",
    ):
        q.list("shop_orders", {"note": "x"})
    with pytest.raises(QueryError, match=r"no query 'top' \(known: big_orders, by_email, order"):
        q.run("shop_orders", "top")
    with pytest.raises(QueryError, match="'amount'.*not a valid int"):
        q.list("shop_orders", {"customer": "c1", "amount": "lots"}, allow_unindexed=True)
    # explicitly allowed: a scan on an unindexed column
    assert q.list("shop_orders", {"note": "x"}, allow_unindexed=True).rows == []

    first = q.list("shop_orders", {"customer": "c0"}, limit=2)
    with pytest.raises(QueryError, match="belongs to another list"):
        q.list("shop_orders", {"customer": "c1"}, after=first.next)
    with pytest.raises(QueryError, match="is not a cursor this query returned"):
        q.list("shop_orders", {"customer": "c1"}, after="garbage!")


def test_pages_never_repeat_or_skip_rows_while_rows_are_inserted_between_pages(
    shop_factory: Callable[..., Shop], pg_database: Callable[[], str]
) -> None:
    shop = shop_factory(pg_database())
    original = [order_placed(f"o{i:04d}", "c1", i) for i in range(0, 60, 2)]  # even ids
    shop.write(original)
    shop.sync()
    q = shop.queries

    seen: list[str] = []
    cursor = None
    inserted = 0
    while True:
        page = q.list("shop_orders", {"customer": "c1"}, after=cursor, limit=7)
        seen += [r["order_id"] for r in page.rows]
        cursor = page.next
        if cursor is None:
            break
        # between pages: odd ids land before and after the cursor, through the real pipeline
        batch = [order_placed(f"o{i:04d}", "c1", i) for i in range(2 * inserted + 1, 60, 13)]
        batch += [order_placed(f"z{inserted:04d}", "c1", 1)]
        inserted += 1
        shop.write(batch)
        shop.sync()

    assert inserted >= 3
    assert len(seen) == len(set(seen)), "a row was repeated"
    assert {e[1] for e in original} <= set(seen), "a row present throughout was skipped"
    assert seen == sorted(seen)


def test_declared_queries_convert_arguments_and_read_through_the_reader(
    shop_factory: Callable[..., Shop], store_url: str
) -> None:
    shop = shop_factory(store_url)
    shop.write(orders_placed(9, 3))
    shop.write([("customer", "c2", "CustomerRegistered", {"email": "b@x.io", "name": "Bo"})])
    shop.write([("order", "o0002", "OrderShipped", {})])
    shop.sync()
    q = shop.queries

    assert q.run("shop_orders", "by_email", "b@x.io").value == {
        "customer": "c2",
        "email": "b@x.io",
        "name": "Bo",
    }
    assert q.run("shop_orders", "by_email", "nobody@x.io").value is None
    assert q.run("shop_orders", "order_status", "o0002").value == "shipped"
    assert q.run("shop_orders", "order_status", order_id="o0005").value == "placed"
    big = q.run("shop_orders", "big_orders", "c2", min_amount="5").value  # "5" -> 5
    assert big == [{"order_id": "o0005", "amount": 5}, {"order_id": "o0008", "amount": 8}]
    with pytest.raises(QueryError, match="argument 'min_amount'='many'"):
        q.run("shop_orders", "big_orders", "c2", min_amount="many")
    with pytest.raises(QueryError, match=r"big_orders\(customer: str, min_amount: int = 0\)"):
        q.run("shop_orders", "big_orders")


def test_consistency_token_parsing() -> None:
    assert ConsistencyToken.parse("orders:17") == ConsistencyToken(source="orders", position=17)
    assert ConsistencyToken.parse("event:orders:17") == ConsistencyToken(event_id="orders:17")
    assert ConsistencyToken.parse("3f1c0a") == ConsistencyToken(event_id="3f1c0a")
    assert str(ConsistencyToken.at("shop", 4)) == "shop:4"
    with pytest.raises(QueryError, match="lacks the event id"):
        ConsistencyToken.parse("event:")


@pytest.fixture
def running(shop_factory: Callable[..., Shop], pg_database: Callable[[], str]) -> Iterator[Shop]:
    """A shop whose relay and worker run in this process (memory broker) until the test ends."""
    shop = shop_factory(pg_database(), engine={"sweep_every": "200ms"})
    with pipeline_running(shop):
        yield shop


def test_a_token_returns_the_value_just_written(running: Shop) -> None:
    q = running.queries
    [placed] = running.write([order_placed("o1", "c1", 10)])
    assert q.get("shop_orders", "o1", wait_for=placed, timeout=30).value["status"] == "placed"

    for round_ in range(5):
        [shipped] = running.write(
            [("order", "o1", "OrderShipped" if round_ % 2 == 0 else "OrderPlaced",
              {"customer": "c1", "amount": round_})]
        )  # fmt: skip
        result = q.get("shop_orders", "o1", wait_for=f"event:{shipped}", timeout=30)
        assert not result.stale
        assert result.value["status"] == ("shipped" if round_ % 2 == 0 else "placed")
        reached = result.consistency
        assert reached is not None and reached.checkpoint >= reached.position

    # by log position: the next event of the source lands at head + 1
    head = running.runtime.log.head("shop")
    running.write([order_placed("o2", "c2", 5)])
    status = q.run("shop_orders", "order_status", "o2", wait_for=f"shop:{head + 1}", timeout=30)
    assert status.value == "placed"


def test_timeout_names_the_token_and_how_far_the_projection_got(
    shop_factory: Callable[..., Shop], pg_database: Callable[[], str]
) -> None:
    shop = shop_factory(pg_database())
    shop.write([order_placed("o1", "c1", 10)])
    shop.sync()
    q = shop.queries
    [shipped] = shop.write([("order", "o1", "OrderShipped", {})])

    with pytest.raises(ConsistencyTimeout) as not_relayed:
        q.get("shop_orders", "o1", wait_for=shipped, timeout=0.2)
    assert f"'shop_orders' has not applied event:{shipped} within 0.2s" in str(not_relayed.value)
    assert "is not in the event log yet (is the relay running?)" in str(not_relayed.value)
    assert not_relayed.value.checkpoint is None

    shop.relay()  # in the log now, but no worker applies it
    with pytest.raises(ConsistencyTimeout) as not_applied:
        q.get("shop_orders", "o1", wait_for=shipped, timeout=0.2)
    message = str(not_applied.value)
    assert "it is shop:2 (OrderShipped of order:o1), in lane shop/" in message
    assert "whose checkpoint is at 1 (1 behind)" in message
    assert (not_applied.value.position, not_applied.value.checkpoint) == (2, 1)

    stale = q.get("shop_orders", "o1", wait_for=shipped, timeout=0.1, stale_ok=True)
    assert stale.stale and stale.value["status"] == "placed"
    assert isinstance(stale.consistency, ConsistencyTimeout)
    page = q.list("shop_orders", {"customer": "c1"}, wait_for=shipped, timeout=0, stale_ok=True)
    assert page.stale and [r["status"] for r in page.rows] == ["placed"]

    with pytest.raises(
        ConsistencyTimeout, match="the log of source 'shop' reaches only position 2"
    ):
        q.wait("shop_orders", "shop:3", timeout=0.1)
    with pytest.raises(QueryError, match=r"unknown source 'bank' \(known: shop\)"):
        q.wait("shop_orders", "bank:3", timeout=0.1)

    shop.runtime.engine.catch_up()
    fresh = q.get("shop_orders", "o1", wait_for=shipped, timeout=5)
    assert not fresh.stale and fresh.value["status"] == "shipped"


def test_an_ignored_event_counts_once_what_its_lane_reads_before_it_is_applied(
    shop_factory: Callable[..., Shop], pg_database: Callable[[], str]
) -> None:
    shop = shop_factory(pg_database())
    [_, ignored] = shop.write([order_placed("o1", "c1", 3), ("order", "o1", "OrderAudited", {})])
    shop.relay()
    with pytest.raises(ConsistencyTimeout, match="OrderAudited of order:o1"):
        shop.queries.wait("shop_orders", ignored, timeout=0.1)
    shop.runtime.engine.catch_up()
    reached = shop.queries.wait("shop_orders", ignored, timeout=5)
    assert reached.position == 2 and reached.checkpoint is not None and reached.checkpoint >= 1


def test_a_parked_event_fails_the_wait_at_once(
    shop_factory: Callable[..., Shop], pg_database: Callable[[], str]
) -> None:
    shop = shop_factory(pg_database(), engine={"max_attempts": 1})
    [bad] = shop.write([order_placed("o1", "c1", -5)])
    shop.write([order_placed("o2", "c1", 5)])
    shop.sync()
    with pytest.raises(ConsistencyParked) as parked:
        shop.queries.get("shop_orders", "o1", wait_for=bad, timeout=60)
    message = str(parked.value)
    assert "projection 'shop_orders' parked shop:1 (OrderPlaced of order:o1)" in message
    assert "negative amount in order o1" in message
    assert "readmodel parked retry e" in message
    stale = shop.queries.get("shop_orders", "o1", wait_for=bad, timeout=60, stale_ok=True)
    assert stale.stale and stale.value is None
    engine = shop.runtime.engine
    (entry,) = engine.store_of("shop_orders").parked("shop_orders")
    engine.skip(entry)  # it will never be applied: the wait must not report it reached
    with pytest.raises(ConsistencyParked, match=r"will never apply shop:1 .*then skipped"):
        shop.queries.wait("shop_orders", bad, timeout=60)


# -- the command line -----------------------------------------------------------------


@pytest.fixture
def cli_shop(
    shop_factory: Callable[..., Shop], pg_database: Callable[[], str], tmp_path: Path
) -> tuple[Shop, Path]:
    shop = shop_factory(pg_database())
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": [SHOP_PROJECTIONS],
            "store": {"url": shop.settings.store.url},
            "sources": {"shop": {"url": shop.settings.sources["shop"].url}},
        },
    )
    shop.write(orders_placed(7, 2))
    shop.write([("customer", "c0", "CustomerRegistered", {"email": "z@x.io", "name": "Zed"})])
    shop.sync()
    return shop, config


def _json(text: str) -> Any:
    return orjson.loads(text)


def test_cli_get_list_and_named_queries_print_json(cli_shop: tuple[Shop, Path]) -> None:
    _, config = cli_shop
    c = ["--config", str(config)]

    got = run_cli(["query", "shop_orders", "o0003", "--json", *c])
    assert got.exit_code == 0, got.output
    assert _json(got.stdout) == {
        "row": {"order_id": "o0003", "customer": "c1", "status": "placed", "amount": 3,
                "note": None},
        "stale": False,
    }  # fmt: skip
    assert len(got.stdout.strip().splitlines()) == 1
    missing = run_cli(["query", "shop_orders", "nope", *c])
    assert missing.exit_code == 0 and _json(missing.stdout) == {"row": None, "stale": False}

    first = run_cli(
        ["query", "shop_orders", "--where", "customer=c0", "--limit", "3", "--json", *c]
    )
    assert first.exit_code == 0, first.output
    page1 = _json(first.stdout)
    assert [r["order_id"] for r in page1["rows"]] == ["o0000", "o0002", "o0004"]
    second = run_cli(
        ["query", "shop_orders", "-w", "customer=c0", "--limit", "3", "--after", page1["next"], *c]
    )
    page2 = _json(second.stdout)
    assert [r["order_id"] for r in page2["rows"]] == ["o0006"] and page2["next"] is None

    customer = run_cli(["query", "shop_orders", "c0", "--table", "q_customers", "--json", *c])
    assert _json(customer.stdout)["row"]["email"] == "z@x.io"
    named = run_cli(["query", "shop_orders", "--name", "by_email", "z@x.io", "--json", *c])
    assert _json(named.stdout) == {
        "result": {"customer": "c0", "email": "z@x.io", "name": "Zed"},
        "stale": False,
    }
    kwargs = run_cli(
        ["query", "shop_orders", "c1", "-n", "big_orders", "-w", "min_amount=4", "--json", *c]
    )
    assert _json(kwargs.stdout)["result"] == [{"order_id": "o0005", "amount": 5}]


def test_cli_where_json_values_are_checked_against_the_columns(cli_shop: tuple[Shop, Path]) -> None:
    _, config = cli_shop
    c = ["--allow-unindexed", "--json", "--config", str(config)]

    def listed(*where: str) -> list[str]:
        done = run_cli(["query", "shop_orders", *(a for w in where for a in ("-w", w)), *c])
        assert done.exit_code == 0, done.output
        return [r["order_id"] for r in _json(done.stdout)["rows"]]

    assert listed("amount:=3") == listed("amount=3") == listed('amount:="3"') == ["o0003"]
    assert listed("customer=c0", "note:=null") == ["o0000", "o0002", "o0004", "o0006"]
    assert listed("customer=c0", "note=null") == []  # the text "null"
    for where, message in {
        "amount:=true": "column 'amount': true is not a valid int",
        "amount:=1.5": "column 'amount': 1.5 is not a valid int",
        "customer:=7": "column 'customer': 7 is not a valid str (give text as customer=VALUE)",
        'customer:=["c0"]': "column 'customer': [\"c0\"] is not a valid str",
    }.items():
        done = run_cli(["query", "shop_orders", "-w", where, *c])
        assert done.exit_code == 2 and message in done.stderr, (where, done.output)


USAGE_ERRORS = [
    (["nope", "o1"], "unknown projection 'nope' (known: shop_orders)"),
    (["shop_orders", "o1", "--table", "zzz"], "no table 'zzz' (known: q_customers, q_orders)"),
    (["shop_orders", "-w", "colour=red"], "no column 'colour'"),
    (["shop_orders", "-w", "note=x"], "column 'note' is not indexed (indexed: customer, "),
    (["shop_orders", "x", "--name", "top"], "no query 'top' (known: big_orders, by_email, "),
    (["shop_orders", "o1", "-w", "customer=c1"], "give a KEY (get) or --where (list)"),
    (["shop_orders", "-w", "customer"], "expected field=value"),
    (["shop_orders", "-w", "customer=c1", "-w", "customer=c2"], "--where customer: given twice"),
    (["shop_orders", "z@x.io", "--name", "by_email", "--limit", "1"], "takes its own parameters"),
    (["shop_orders", "--name", "big_orders", "--after", "junk"], "as --where NAME=VALUE"),
]


def test_cli_usage_errors_exit_2_naming_the_known_ones(cli_shop: tuple[Shop, Path]) -> None:
    _, config = cli_shop
    for args, message in USAGE_ERRORS:
        result = run_cli(["query", *args, "--config", str(config)])
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.stderr.split()), (args, result.stderr)
        assert result.stdout == ""


def test_cli_unindexed_column_allowed_explicitly(cli_shop: tuple[Shop, Path]) -> None:
    _, config = cli_shop
    result = run_cli(
        ["query", "shop_orders", "-w", "amount=3", "--allow-unindexed", "--json", "-c", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert [r["order_id"] for r in _json(result.stdout)["rows"]] == ["o0003"]


def test_cli_wait_for_timeout_exits_1_and_stale_ok_prints_the_old_value(
    cli_shop: tuple[Shop, Path],
) -> None:
    shop, config = cli_shop
    [shipped] = shop.write([("order", "o0001", "OrderShipped", {})])
    shop.relay()
    c = ["--config", str(config)]
    wait = ["--wait-for", shipped, "--timeout", "0.2"]

    failed = run_cli(["query", "shop_orders", "o0001", *wait, *c])
    assert failed.exit_code == 1
    stderr = " ".join(failed.stderr.split())
    assert f"error: projection 'shop_orders' has not applied event:{shipped} within 0.2s" in stderr
    assert "OrderShipped of order:o0001" in stderr
    assert failed.stdout == ""

    stale = run_cli(["query", "shop_orders", "o0001", *wait, "--stale-ok", "--json", *c])
    assert stale.exit_code == 0, stale.output
    assert _json(stale.stdout)["row"]["status"] == "placed"
    assert _json(stale.stdout)["stale"] is True
    assert "warning: stale read: projection 'shop_orders' has not applied" in " ".join(
        stale.stderr.split()
    )

    shop.runtime.engine.catch_up()
    fresh = run_cli(["query", "shop_orders", "o0001", *wait, "--json", *c])
    assert fresh.exit_code == 0
    assert _json(fresh.stdout) == {
        "row": {"order_id": "o0001", "customer": "c1", "status": "shipped", "amount": 1,
                "note": None},
        "stale": False,
    }  # fmt: skip


# -- cache-aside ------------------------------------------------------------------------


class CountingHooks(CacheHooks):
    def __init__(self) -> None:
        self.hits = self.misses = 0

    def hit(self, projection: str) -> None:
        self.hits += 1

    def miss(self, projection: str) -> None:
        self.misses += 1


@pytest.fixture(params=["memory", "redis"])
def cache_settings(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "memory":
        yield {"url": "memory://"}
        return
    prefix = f"rmtest:queries:{uuid.uuid4().hex[:10]}:"
    # a generous timeout: a fallback on a loaded machine would be neither a hit nor a miss
    yield {"url": REDIS_URL, "key_prefix": prefix, "connect_timeout": "5s"}
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_cached_reads_are_tagged_and_invalidated_by_applied_events(
    shop_factory: Callable[..., Shop], pg_database: Callable[[], str], cache_settings: dict
) -> None:
    shop = shop_factory(pg_database(), cache=cache_settings)
    cache = shop.runtime.cache
    assert cache is not None
    hooks = cache.hooks = CountingHooks()
    q = Queries.from_engine(shop.runtime.engine, shop.runtime.log.engine)
    shop.write([order_placed("o1", "c1", 10), order_placed("o2", "c1", 20)])
    shop.write([("customer", "c1", "CustomerRegistered", {"email": "a@x.io", "name": "Al"})])
    shop.sync()

    def reads() -> tuple[int, int]:
        return hooks.hits, hooks.misses

    # get by key: key_tags "order:{order_id}"
    assert q.get("shop_orders", "o1").value["status"] == "placed"
    assert q.get("shop_orders", "o2").value["status"] == "placed"
    assert reads() == (0, 2)
    assert q.get("shop_orders", "o1").value["status"] == "placed"
    assert reads() == (1, 2)
    shop.write([("order", "o1", "OrderShipped", {})])
    shop.sync()  # invalidates "order:o1" only
    assert q.get("shop_orders", "o1").value["status"] == "shipped"
    assert q.get("shop_orders", "o2").value["status"] == "placed"
    assert reads() == (2, 3)

    # a declared query tagged from its arguments
    assert q.run("shop_orders", "order_status", "o2").value == "placed"
    assert q.run("shop_orders", "order_status", "o2").value == "placed"
    assert reads() == (3, 4)
    shop.write([("order", "o2", "OrderShipped", {})])
    shop.sync()
    assert q.run("shop_orders", "order_status", "o2").value == "shipped"
    assert reads() == (3, 5)

    # tags from the result: the first read teaches them, then reads are cached
    assert q.run("shop_orders", "by_email", "a@x.io").value["name"] == "Al"
    assert reads() == (3, 5)  # not through the cache: its tags were unknown
    assert q.run("shop_orders", "by_email", "a@x.io").value["name"] == "Al"
    assert q.run("shop_orders", "by_email", "a@x.io").value["name"] == "Al"
    assert reads() == (4, 6)
    shop.write([("customer", "c1", "CustomerRegistered", {"email": "b@x.io", "name": "Al"})])
    shop.sync()  # invalidates "customer:c1"
    assert q.run("shop_orders", "by_email", "a@x.io").value is None
    assert q.run("shop_orders", "by_email", "b@x.io").value["customer"] == "c1"
    # "not found" is never cached under no tag: a later registration shows at once
    assert q.run("shop_orders", "by_email", "c@x.io").value is None
    assert q.run("shop_orders", "by_email", "c@x.io").value is None
    shop.write([("customer", "c9", "CustomerRegistered", {"email": "c@x.io", "name": "Cy"})])
    shop.sync()
    assert q.run("shop_orders", "by_email", "c@x.io").value["customer"] == "c9"

    # lists are never cached; untagged tables neither
    hits = hooks.hits
    q.list("shop_orders", {"customer": "c1"})
    q.list("shop_orders", {"customer": "c1"})
    assert hooks.hits == hits

    # a token read goes to the store, never to (nor into) the cache
    before = reads()
    [event] = shop.write([order_placed("o3", "c1", 5)])
    shop.sync()
    assert q.get("shop_orders", "o3", wait_for=event, timeout=5).value["amount"] == 5
    assert reads() == before


typed_metadata = sa.MetaData()
typed_prices = sa.Table(
    "typed_prices",
    typed_metadata,
    sa.Column("id", sa.Numeric(10, 2), primary_key=True),
    sa.Column("opens", sa.Time, nullable=False, index=True),
    sa.Column("price", sa.Integer, nullable=False),
)
typed_names = sa.Table("typed_names", typed_metadata, sa.Column("name", sa.Text, primary_key=True))
typed_counts = sa.Table(
    "typed_counts",
    typed_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)


class TypedPrices(Projection):
    name = "typed_prices"
    tables = (typed_prices, typed_names, typed_counts)
    key_tags = {
        "typed_prices": "price:{id}",
        "typed_names": "name:{name}",
        "typed_counts": "n:{id}",
    }


def test_keys_and_filters_of_numeric_and_time_columns(pg_database: Callable[[], str]) -> None:
    """One spelling per NUMERIC key (the column's scale), so the cache holds one entry per
    row and the row's tag invalidates it; TIME filters; clear errors for the rest."""
    from datetime import time as clock

    from projections.cache import MemoryCache
    from projections.sql_store import SqlStore

    store = SqlStore(pg_database())
    typed_metadata.create_all(store.engine)
    with store.engine.begin() as conn:
        conn.execute(typed_prices.insert(), {"id": Decimal("1.5"), "opens": clock(9), "price": 10})
    cache = MemoryCache()
    queries = Queries([TypedPrices()], {"default": store}, store.engine, cache=cache)
    try:
        assert queries.get("typed_prices", "1.5").value["price"] == 10
        assert queries.get("typed_prices", "1.50").value["price"] == 10
        with store.engine.begin() as conn:
            conn.execute(typed_prices.update().values(price=99))
        cache.invalidate("typed_prices", ["price:1.50"])  # the tag of the row as stored
        assert queries.get("typed_prices", "1.5").value["price"] == 99
        assert queries.get("typed_prices", Decimal("1.500")).value["price"] == 99

        with store.engine.begin() as conn:
            conn.execute(typed_counts.insert(), {"id": 42, "n": 1})
        for key in (42.0, Decimal("42.00"), 42):  # one cache entry and tag: those of row 42
            assert queries.get("typed_prices", key, table="typed_counts").value["n"] == 1
        with store.engine.begin() as conn:
            conn.execute(typed_counts.update().values(n=2))
        cache.invalidate("typed_prices", ["n:42"])
        for key in (42.0, Decimal("42.00"), 42, "42"):
            assert queries.get("typed_prices", key, table="typed_counts").value["n"] == 2
        assert queries.get("typed_prices", 42.5, table="typed_counts").value is None

        rows = queries.list("typed_prices", {"opens": "09:00"}).rows
        assert [(r["id"], r["opens"]) for r in rows] == [("1.50", "09:00:00")]  # JSON-safe
        with pytest.raises(QueryError, match="consistency token 'shop:9999999999999999999"):
            queries.get("typed_prices", "1.5", wait_for="shop:99999999999999999999")
        forged = base64.urlsafe_b64encode(orjson.dumps({"k": [{"id": 1}], "f": "x"})).decode()
        with pytest.raises(QueryError, match="is not a cursor this query returned"):
            queries.list("typed_prices", {"opens": "09:00"}, after=forged)
        with pytest.raises(QueryError, match="cannot be read"):
            queries.get("typed_prices", "\udcff", table="typed_names")  # not UTF-8 (argv)
    finally:
        queries.close()
        store.close()
