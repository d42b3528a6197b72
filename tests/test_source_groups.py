"""Source groups: a projection subscribed to ``pos`` reads every member source ``pos:<tenant>``
(a database per tenant), each member exactly once and in order, live and in a rebuild."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import ConfigError, Settings, load_settings
from outbox.envelope import aggregate_hash
from outbox.log import EventLog
from outbox.relay import Relay
from outbox.rows import LogRecord
from projections.replay import Replayer, ReplayOptions
from projections.replay_types import ReplayHooks
from projections.store_tables import checkpoints
from tests.cli_helpers import run_cli, write_config
from tests.projection_fixtures import engine_on
from tests.tenant_fixtures import (
    SalesByDay,
    init_tenant_outbox,
    model,
    out_of_order,
    record_sales,
    sales_for,
    tenant_source,
)


def test_a_group_projection_builds_each_tenants_rows_from_its_database(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store = pg_database()
    acme, globex = pg_database(), pg_database()
    for url in (acme, globex):
        init_tenant_outbox(url)
    record_sales(acme, sales_for(3, 4))  # 12 sales: 100, 200, 300 cents per register
    record_sales(globex, sales_for(1, 5))
    config = write_config(
        tmp_path / "pos.toml",
        {
            "store": {"url": store},
            "projections": ["tests.tenant_fixtures"],
            "sources": {
                "pos:acme": tenant_source(acme, "acme"),
                "pos:globex": {"url": "sqlite:///unused.db"},
            },
        },
    )
    # A variable cannot hold ':', which it spells '_': these override pos:globex.
    env = {
        "READMODEL_SOURCES__POS_GLOBEX__URL": globex,
        "READMODEL_SOURCES__POS_GLOBEX__TENANT": "globex",
        "READMODEL_SOURCES__POS_GLOBEX__COLUMNS__TENANT": "",
    }
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    result = run_cli(["run", "--until-caught-up", "--config", str(config)], env=env)
    assert result.exit_code == 0, result.output
    assert "relayed 17, applied 17" in result.output

    engine = sa.create_engine(store)
    try:
        assert model(engine) == {"acme": (12, 2400), "globex": (5, 500)}
        assert out_of_order(engine) == 0
    finally:
        engine.dispose()

    status = run_cli(["status", "--json", "--config", str(config)], env=env)
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert {s["source"]: s["log_head"] for s in report["sources"]} == {
        "pos:acme": 12,
        "pos:globex": 5,
    }
    (projection,) = report["projections"]
    assert {(lane["source"], lane["head"]) for lane in projection["lanes"]} == {
        ("pos:acme", 12),
        ("pos:globex", 5),
    }  # lanes per member source, none for the group name itself
    assert projection["lag_events"] == 0


def test_each_member_source_is_applied_exactly_once_and_in_order(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    store = pg_database()
    tenants = {"acme": pg_database(), "globex": pg_database()}
    for url in tenants.values():
        init_tenant_outbox(url)
    settings = make_settings(
        store,
        {
            f"pos:{tenant}": tenant_source(url, tenant) | {"batch_size": 7}
            for tenant, url in tenants.items()
        },
    )
    projection = SalesByDay()
    rng = random.Random(4)
    with engine_on(store, [projection], batch_size=5) as (log, _, engine):
        relay = Relay(settings, log=log)
        written = {tenant: 0 for tenant in tenants}
        for round_ in range(3):
            for tenant, url in tenants.items():
                per_register = 3 + round_
                sales = [
                    (register, day, cents, n + written[tenant] // 4)
                    for register, day, cents, n in sales_for(4, per_register)
                ]
                record_sales(url, sales)
                written[tenant] += len(sales)
            relay.drain()
            lanes = engine.lanes(projection)
            assert {lane.source for lane in lanes} == {"pos:acme", "pos:globex"}
            for lane in rng.sample(lanes * 2, len(lanes) * 2):  # shuffled, each twice
                engine.process(lane)

        assert log.heads() == {"pos:acme": written["acme"], "pos:globex": written["globex"]}
        with log.engine.connect() as conn:
            for source, head in log.heads().items():  # gap-free positions per member
                positions = conn.execute(
                    sa.text("SELECT position FROM rm_event_log WHERE source = :s ORDER BY 1"),
                    {"s": source},
                ).scalars()
                assert list(positions) == list(range(1, head + 1))
            done = {
                (row.source, row.partition): row.position
                for row in conn.execute(sa.select(checkpoints))
            }
        assert done == {
            (f"pos:{tenant}", p): written[tenant] for tenant in tenants for p in range(2)
        }
        cents_each = sum(100 * (r + 1) for r in range(4)) // 4
        assert model(log.engine) == {
            tenant: (count, count * cents_each) for tenant, count in written.items()
        }
        assert out_of_order(log.engine) == 0
        assert not engine.lagging()


def _log_sales(log: EventLog, source: str, tenant: str, sales: list) -> None:
    records = [
        LogRecord(
            source_position=None,
            event_id=f"{source}-{register}-{n}",
            tenant=tenant,
            aggregate_type="register",
            aggregate_id=register,
            key_hash=aggregate_hash("register", register),
            event_type="SaleRecorded",
            payload=json.dumps({"day": day, "cents": cents, "n": n}),
            headers=None,
            occurred_at=None,
        )
        for register, day, cents, n in sales
    ]
    log.append(source, records)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_rebuild_reads_every_member_including_one_that_appears_meanwhile(
    kind: str, database_for: Callable[[str], str]
) -> None:
    projection = SalesByDay()
    with engine_on(database_for(kind), [projection], batch_size=50) as (log, store, engine):
        _log_sales(log, "pos:acme", "acme", sales_for(3, 10))
        _log_sales(log, "pos:globex", "globex", sales_for(2, 10))
        engine.catch_up()
        live = model(log.engine)
        assert live == {"acme": (30, 6000), "globex": (20, 3000)}
        with log.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM pos_sales_by_day WHERE tenant = 'globex'"))

        class NewTenant(ReplayHooks):
            def before_swap(self) -> None:
                # A new tenant's first events, logged and applied live during the rebuild:
                # the live tables are about to be replaced, so the rebuild must hold them.
                _log_sales(log, "pos:initech", "initech", sales_for(1, 3))
                engine.catch_up()

        summary = Replayer(engine.reader, projection, store, hooks=NewTenant()).run(ReplayOptions())
        assert summary.applied == {"pos:acme": 30, "pos:globex": 20, "pos:initech": 3}
        assert model(log.engine) == {**live, "initech": (3, 300)}
        assert out_of_order(log.engine) == 0
        assert store.checkpoints("sales_by_day") == {
            **{("pos:acme", p): 30 for p in range(2)},
            **{("pos:globex", p): 20 for p in range(2)},
            **{("pos:initech", p): 3 for p in range(2)},
        }
        _log_sales(log, "pos:initech", "initech", [("r0", "2026-11-27", 100, 4)])
        engine.catch_up()
        assert model(log.engine)["initech"] == (4, 400)
        assert out_of_order(log.engine) == 0

        in_place = type("InPlace", (SalesByDay,), {"replay_safe": True})()  # --source: in place
        plan = Replayer(engine.reader, in_place, store).plan(
            ReplayOptions(from_position=0, source="pos")
        )
        assert [s.source for s in plan.sources] == ["pos:acme", "pos:globex", "pos:initech"]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_member_appearing_while_a_long_fill_transaction_is_open(
    kind: str, database_for: Callable[[str], str]
) -> None:
    # A new tenant's events (and more of an old one's) logged and applied live while the
    # rebuild's first transaction is open between two parts (on SQLite, whose one writer
    # is that transaction, once it committed): a later pass of the catch-up adds the new
    # member and fills it, and the swap ends with everything.
    projection = SalesByDay()
    with engine_on(database_for(kind), [projection], batch_size=50) as (log, store, engine):
        _log_sales(log, "pos:acme", "acme", sales_for(3, 10))
        engine.catch_up()

        class Meanwhile(ReplayHooks):
            done = False

            def progress(self, source: str, position: int, applied: int, total: int) -> None:
                if not self.done:
                    self.done = True
                    _log_sales(log, "pos:initech", "initech", sales_for(2, 15))
                    more = [("r9", "2026-11-27", 100, n) for n in range(1, 5)]
                    _log_sales(log, "pos:acme", "acme", more)
                    engine.catch_up()

        replayer = Replayer(
            engine.reader,
            projection,
            store,
            hooks=Meanwhile(),
            batch_size=8,
            read_size=3 if kind == "postgresql" else None,
        )
        summary = replayer.run(ReplayOptions())
        assert summary.applied == {"pos:acme": 34, "pos:initech": 30}
        assert model(log.engine) == {"acme": (34, 6400), "initech": (30, 4500)}
        assert out_of_order(log.engine) == 0
        assert store.checkpoints("sales_by_day") == {
            **{("pos:acme", p): 34 for p in range(2)},
            **{("pos:initech", p): 30 for p in range(2)},
        }


def test_member_source_names_in_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    member = {"url": "sqlite:///acme.db", "tenant": "acme", "columns": {"tenant": ""}}
    write_config(path, {"sources": {"pos:acme": member}})
    assert load_settings(path).sources["pos:acme"].tenant == "acme"
    for name, expected in [
        ("pos:acme:x", "group:member"),
        ("event:acme", "consistency tokens"),
        ("pos/acme", "group:member"),
    ]:
        write_config(path, {"sources": {name: member}})
        with pytest.raises(ConfigError, match=expected) as raised:
            load_settings(path)
        assert str(path) in str(raised.value)
    write_config(path, {"sources": {"pos:acme": member, "pos": member}})
    with pytest.raises(ConfigError, match="'pos' has the name of a source group"):
        load_settings(path)


def test_a_consistency_token_names_a_member_source_by_position() -> None:
    from projections.consistency import ConsistencyToken

    token = ConsistencyToken.parse("pos:acme:17")
    assert (token.source, token.position, token.event_id) == ("pos:acme", 17, None)
    assert str(token) == "pos:acme:17"
    assert ConsistencyToken.parse("orders:17").source == "orders"
