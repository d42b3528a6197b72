"""``readmodel replay`` on PostgreSQL and SQLite: blue/green rebuilds that readers never see
half-done, interrupted rebuilds, strict and skipping handlers, in-place replays, the CLI."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from config import Settings
from outbox.errors import StoreError
from outbox.relay import Relay
from projections import invalidations
from projections.api import Event, Projection, Tx, on
from projections.cache import MemoryCache
from projections.invalidations import WHOLE_PROJECTION
from projections.redis_cache import RedisCache
from projections.replay import (
    Replayer,
    ReplayError,
    ReplayHooks,
    ReplayLocked,
    ReplayOptions,
    ReplayRefused,
    replay_lock,
)
from projections.store_tables import blocked, checkpoints, failures
from tests.cache_helpers import (
    REDIS_URL,
    dead_redis_url,
    fill_entries,
    fresh_prefix,
    redis_prefix,
)
from tests.cli_helpers import run_cli
from tests.outbox_helpers import insert_events
from tests.projection_fixtures import (
    SLOW,
    account_totals,
    customer_spend,
    engine_on,
    log_events,
    order_lines,
)
from tests.replay_fixtures import last_deposit
from tests.replay_helpers import Events, Pipeline, deposits, last_seqs, orders, pipeline_config


@pytest.fixture
def pipelines(
    make_settings: Callable[..., Settings], store_url: str, sqlite_database: Any
) -> Iterator[Callable[[], Pipeline]]:
    made: list[Pipeline] = []
    urls = iter([store_url])

    def make() -> Pipeline:
        url = next(urls, None) or (
            sqlite_database() if store_url.startswith("sqlite") else _pg_again(store_url)
        )
        made.append(Pipeline(make_settings, url, sqlite_database))
        return made[-1]

    created: list[str] = []

    def _pg_again(url: str) -> str:
        name = f"{sa.make_url(url).database}_clean"
        admin = sa.create_engine(
            sa.make_url(url).set(database="postgres", drivername="postgresql+psycopg"),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.NullPool,
        )
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        created.append(name)
        return sa.make_url(url).set(database=name).render_as_string(hide_password=False)

    yield make
    for p in made:
        p.close()
    for name in created:
        admin = sa.create_engine(
            sa.make_url(store_url).set(database="postgres", drivername="postgresql+psycopg"),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.NullPool,
        )
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def pipeline(pipelines: Callable[[], Pipeline]) -> Pipeline:
    return pipelines()


def expected_totals(events: Events) -> dict[str, int]:
    totals: dict[str, int] = {}
    for _, account, _, payload in events:
        totals[account] = totals.get(account, 0) + payload["amount"]
    return totals


def live_checkpoints(p: Pipeline, projection: str) -> dict[tuple[str, int], int]:
    return p.runtime.engine.store_of(projection).checkpoints(projection)


# -- blue/green ------------------------------------------------------------------------


def test_rebuild_repairs_a_corrupted_model_and_equals_a_clean_build(
    pipelines: Callable[[], Pipeline],
) -> None:
    live, clean = pipelines(), pipelines()
    bank = deposits(1200, 23, seed=1)
    placed, users = orders(400, seed=2)
    for p in (live, clean):
        p.feed("bank", bank)
        p.feed("orders", placed)
        p.feed("auth", users)
    live.execute("UPDATE account_totals SET total = 0")
    live.execute("DELETE FROM customer_spend WHERE customer = 'c1'")
    live.execute("UPDATE last_deposit SET amount = -1")
    assert live.rows(account_totals) != clean.rows(account_totals)

    for _ in range(2):  # twice: the second rebuild's shadow names must not collide
        for name in ("totals", "customer_spend", "last_deposit"):
            summary = live.replayer(name).run(ReplayOptions())
            assert summary.mode == "blue-green" and summary.skipped == []

    for table in (account_totals, customer_spend, order_lines, last_deposit):
        assert live.rows(table) == clean.rows(table), table.name
    assert not any(t.endswith(("__rebuild", "__old")) for t in live.tables())
    head = live.runtime.log.head("bank")
    assert set(live_checkpoints(live, "totals").values()) == {head}
    with live.runtime.log.engine.connect() as conn:
        shadow_rows = conn.execute(
            sa.select(sa.func.count()).where(checkpoints.c.projection.like("%__rebuild"))
        ).scalar_one()
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("last_deposit")}
    assert shadow_rows == 0
    assert {"last_deposit_amount_idx", "ix_last_deposit_seq"} <= indexes
    # The live lanes go on from the swapped checkpoints.
    more = deposits(50, 23, seed=3, start=last_seqs(bank))
    for p in (live, clean):
        p.feed("bank", more)
    assert live.rows(account_totals) == clean.rows(account_totals)
    assert all(r["violations"] == 0 for r in live.rows(account_totals).values())


_CONSTRAINTS = """
SELECT conname, contype FROM pg_constraint WHERE conrelid = 'last_deposit'::regclass
UNION ALL SELECT indexname, 'i' FROM pg_indexes WHERE tablename = 'last_deposit'
ORDER BY 1
"""


def test_the_swap_keeps_constraint_names_grants_and_views(pipeline: Pipeline) -> None:
    """What the database holds beside the model: constraint names as the live table had them,
    a reader role's grant, and a view that reads the new table (the old one is dropped)."""
    if not pipeline.store_url.startswith("postgresql"):
        pytest.skip("PostgreSQL catalog objects")
    bank = deposits(300, 7, seed=5)
    pipeline.feed("bank", bank)
    role = f"rm_test_reader_{random.randrange(16**8):08x}"
    pipeline.execute(f'CREATE ROLE "{role}"')
    try:
        pipeline.execute(f'GRANT SELECT ON last_deposit TO "{role}"')
        pipeline.execute("CREATE VIEW last_amounts AS SELECT account, amount FROM last_deposit")
        with pipeline.runtime.log.engine.connect() as conn:
            before = conn.exec_driver_sql(_CONSTRAINTS).all()
        assert ("last_deposit_amount_check", "c") in before  # the name PostgreSQL chose

        for _ in range(2):
            pipeline.replayer("last_deposit").run(ReplayOptions())
        pipeline.feed("bank", deposits(40, 7, seed=6, start=last_seqs(bank)))

        with pipeline.runtime.log.engine.connect() as conn:
            assert conn.exec_driver_sql(_CONSTRAINTS).all() == before
            granted = conn.exec_driver_sql(
                f"SELECT has_table_privilege('{role}', 'last_deposit', 'SELECT')"
            ).scalar_one()
            through_view = dict(conn.exec_driver_sql("SELECT * FROM last_amounts").all())
        assert granted is True
        assert through_view == {k: r["amount"] for k, r in pipeline.rows(last_deposit).items()}
        assert not any(t.endswith(("__rebuild", "__old")) for t in pipeline.tables())
    finally:
        pipeline.execute("DROP VIEW IF EXISTS last_amounts")
        pipeline.execute(f'DROP OWNED BY "{role}"')  # its grants, wherever they ended up
        pipeline.execute(f'DROP ROLE "{role}"')  # roles outlive the test database


def test_a_materialized_view_on_a_live_table_is_refused_before_the_rebuild(
    pipeline: Pipeline,
) -> None:
    if not pipeline.store_url.startswith("postgresql"):
        pytest.skip("PostgreSQL catalog objects")
    pipeline.feed("bank", deposits(50, 3, seed=7))
    pipeline.execute("CREATE MATERIALIZED VIEW big_deposits AS SELECT * FROM last_deposit")
    before = pipeline.rows(last_deposit)

    with pytest.raises(StoreError, match="materialized view big_deposits reads last_deposit"):
        pipeline.replayer("last_deposit").run(ReplayOptions())

    assert pipeline.rows(last_deposit) == before
    assert not any(t.endswith(("__rebuild", "__old")) for t in pipeline.tables())


class LiveWritesDuringRebuild(ReplayHooks):
    """After the first shadow batches, new events are relayed and applied by the live lanes
    (to the old tables) while the rebuild goes on."""

    def __init__(self, pipeline: Pipeline, events: Events) -> None:
        self.pipeline = pipeline
        self.events = events
        self.batches = 0
        self.live_applied = 0
        self.swapping = False

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.batches += 1
        if self.batches == 2:
            insert_events(self.pipeline.engines["bank"], self.events)
            Relay(self.pipeline.settings, log=self.pipeline.runtime.log).drain()
            self.live_applied = self.pipeline.runtime.engine.catch_up(["totals"])

    def before_swap(self) -> None:
        self.swapping = True


def test_readers_never_miss_a_row_and_live_events_reach_the_rebuilt_model(
    pipeline: Pipeline,
) -> None:
    first = deposits(2500, 40, seed=4)
    pipeline.feed("bank", first)
    pipeline.execute("UPDATE account_totals SET total = -1")  # the rebuild must repair this
    keys = set(pipeline.rows(account_totals))
    later = deposits(600, 45, seed=5, start=last_seqs(first))  # also adds accounts 40..44
    reader_engine = sa.create_engine(
        sa.make_url(pipeline.runtime.log.engine.url), poolclass=sa.NullPool
    )
    stop = threading.Event()
    reads: list[int] = []
    problems: list[str] = []

    def read() -> None:
        try:
            while not stop.is_set():
                with reader_engine.connect() as conn:
                    seen = {r[0] for r in conn.execute(sa.select(account_totals.c.account))}
                missing = keys - seen
                if missing:
                    problems.append(f"missing {sorted(missing)[:3]} after {len(reads)} reads")
                if reads and len(seen) < reads[-1]:
                    problems.append(f"row count dropped from {reads[-1]} to {len(seen)}")
                reads.append(len(seen))
        except Exception as exc:  # pragma: no cover - reported below
            problems.append(repr(exc))

    hooks = LiveWritesDuringRebuild(pipeline, later)
    thread = threading.Thread(target=read)
    thread.start()
    try:
        summary = pipeline.replayer("totals", hooks, batch=200).run(ReplayOptions())
    finally:
        stop.set()
        thread.join()
        reader_engine.dispose()

    assert problems == []
    assert len(reads) > 5
    assert hooks.live_applied == len(later) and hooks.swapping
    all_events = first + later
    rows = pipeline.rows(account_totals)
    assert {k: r["total"] for k, r in rows.items()} == expected_totals(all_events)
    assert sum(r["events"] for r in rows.values()) == len(all_events)
    assert all(r["violations"] == 0 for r in rows.values())
    assert summary.events == len(all_events)
    head = pipeline.runtime.log.head("bank")
    assert set(live_checkpoints(pipeline, "totals").values()) == {head}
    assert pipeline.runtime.engine.lagging(["totals"]) == []


class Interrupt(ReplayHooks):
    def __init__(self, after_batches: int) -> None:
        self.after = after_batches
        self.batches = 0

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.batches += 1
        if self.batches == self.after:
            raise KeyboardInterrupt


def test_interrupted_rebuild_leaves_the_live_model_and_a_later_replay_succeeds(
    pipeline: Pipeline,
) -> None:
    events = deposits(2000, 30, seed=6)
    pipeline.feed("bank", events)
    pipeline.execute("UPDATE account_totals SET total = 7")
    before = pipeline.rows(account_totals)
    checkpoints_before = live_checkpoints(pipeline, "totals")

    with pytest.raises(KeyboardInterrupt):
        pipeline.replayer("totals", Interrupt(after_batches=2), batch=300).run(ReplayOptions())

    assert pipeline.rows(account_totals) == before
    assert live_checkpoints(pipeline, "totals") == checkpoints_before
    assert "account_totals__rebuild" in pipeline.tables()
    plan = pipeline.replayer("totals").plan(ReplayOptions())
    assert [name.strip('"') for name in plan.leftovers] == ["account_totals__rebuild"]

    pipeline.replayer("totals").run(ReplayOptions())
    rows = pipeline.rows(account_totals)
    assert {k: r["total"] for k, r in rows.items()} == expected_totals(events)
    assert "account_totals__rebuild" not in pipeline.tables()


def test_interrupt_inside_the_swap_changes_nothing(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(500, 10, seed=7)
    pipeline.feed("bank", events)
    pipeline.execute("UPDATE account_totals SET total = 7")
    before = pipeline.rows(account_totals)
    replayer = pipeline.replayer("totals")
    swap = replayer.shadow.swap

    def swap_then_die(conn: sa.Connection) -> list[str]:
        swap(conn)
        raise KeyboardInterrupt

    monkeypatch.setattr(replayer.shadow, "swap", swap_then_die)
    with pytest.raises(KeyboardInterrupt):
        replayer.run(ReplayOptions())
    assert pipeline.rows(account_totals) == before
    dropped = pipeline.replayer("totals").cleanup()
    assert [d.strip('"') for d in dropped] == ["account_totals__rebuild"]
    assert pipeline.tables() >= {"account_totals"} and "account_totals__rebuild" not in (
        pipeline.tables()
    )


def test_a_second_replay_of_the_same_projection_is_refused(pipeline: Pipeline) -> None:
    pipeline.feed("bank", deposits(50, 5, seed=8))
    store = pipeline.runtime.engine.store_of("totals")
    with replay_lock(store, "totals"):  # type: ignore[arg-type]
        with pytest.raises(ReplayLocked, match="another replay of 'totals' is running"):
            pipeline.replayer("totals").run(ReplayOptions())
        # another projection is not affected
        pipeline.replayer("balances").run(ReplayOptions())
    pipeline.replayer("totals").run(ReplayOptions())


# -- handler errors and parked events ---------------------------------------------------


def test_strict_replay_stops_at_the_failing_event_and_skip_errors_parks_it(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(600, 6, seed=9)
    pipeline.feed("bank", events)
    before = pipeline.rows(account_totals)
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-3")
    first_position = 1 + next(i for i, e in enumerate(events) if e[1] == "acct-3")

    with pytest.raises(ReplayError) as failure:
        pipeline.replayer("totals").run(ReplayOptions())
    message = str(failure.value)
    assert f"bank:{first_position} " in message
    assert "Deposited of account:acct-3" in message and "refusing acct-3" in message
    assert pipeline.rows(account_totals) == before

    summary = pipeline.replayer("totals").run(ReplayOptions(skip_errors=True))
    acct3 = [i + 1 for i, e in enumerate(events) if e[1] == "acct-3"]
    assert [s.position for s in summary.skipped] == acct3
    assert summary.skipped[0].held_behind is None
    assert all(s.held_behind == first_position for s in summary.skipped[1:])
    assert summary.events == len(events) - len(acct3)
    rows = pipeline.rows(account_totals)
    assert "acct-3" not in rows
    expected = expected_totals(events)
    assert {k: r["total"] for k, r in rows.items()} == {
        k: v for k, v in expected.items() if k != "acct-3"
    }
    parked = pipeline.runtime.engine.parked("totals")
    assert [p.position for p in parked] == acct3
    assert "refusing acct-3" in parked[0].reason

    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    assert pipeline.runtime.engine.retry(parked[0]) == len(acct3)
    rows = pipeline.rows(account_totals)
    assert {k: r["total"] for k, r in rows.items()} == expected


def test_skip_errors_applies_the_events_before_the_failure_in_the_same_batch(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live apply keeps an aggregate's events before the one that fails; so must a rebuild
    whose batch holds them all (the batch is redone after the failure)."""
    events = deposits(300, 5, seed=4)
    pipeline.feed("bank", events)
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-2")
    monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", "5")
    acct2 = [(i + 1, e[3]) for i, e in enumerate(events) if e[1] == "acct-2"]

    summary = pipeline.replayer("totals", batch=1000).run(ReplayOptions(skip_errors=True))

    assert [s.position for s in summary.skipped] == [p for p, _ in acct2[4:]]
    assert all(s.held_behind == acct2[4][0] for s in summary.skipped[1:])
    row = pipeline.rows(account_totals)["acct-2"]
    assert (row["events"], row["total"]) == (4, sum(p["amount"] for _, p in acct2[:4]))
    parked = pipeline.runtime.engine.parked("totals")
    assert [p.position for p in parked] == [p for p, _ in acct2[4:]]


def _park_acct2_live(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Deposits of 4 accounts fed live while acct-2's handler fails: its events are parked.
    The handler keeps failing until the test unsets READMODEL_TEST_FAIL_ON."""
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-2")
    pipeline.runtime.engine.max_attempts = 2
    events = deposits(300, 4, seed=10)
    pipeline.feed("bank", events)
    return events


def test_events_parked_live_are_reattempted_by_the_rebuild(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _park_acct2_live(pipeline, monkeypatch)
    assert "acct-2" not in pipeline.rows(account_totals)
    assert pipeline.runtime.engine.parked("totals")

    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")  # the handler was fixed
    summary = pipeline.replayer("totals").run(ReplayOptions())
    rows = pipeline.rows(account_totals)
    assert {k: r["total"] for k, r in rows.items()} == expected_totals(events)
    assert pipeline.runtime.engine.parked("totals") == []
    statuses = {p.status for p in pipeline.runtime.engine.parked("totals", status=None)}
    assert statuses == {"replayed"} and summary.released_parked > 0
    with pipeline.runtime.log.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(blocked)).scalar_one() == 0
    more = [
        ("account", "acct-2", "Deposited", {"amount": 5, "seq": last_seqs(events)["acct-2"] + 1})
    ]
    pipeline.feed("bank", more)
    assert pipeline.rows(account_totals)["acct-2"]["total"] == expected_totals(events)["acct-2"] + 5


def test_events_parked_live_that_the_rebuild_skips_again_are_not_counted_as_released(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _park_acct2_live(pipeline, monkeypatch)
    acct2 = [i + 1 for i, e in enumerate(events) if e[1] == "acct-2"]
    assert [p.position for p in pipeline.runtime.engine.parked("totals")] == acct2

    summary = pipeline.replayer("totals").run(ReplayOptions(skip_errors=True))

    assert [s.position for s in summary.skipped] == acct2
    assert summary.released_parked == 0
    assert [p.position for p in pipeline.runtime.engine.parked("totals")] == acct2


def test_a_live_failure_is_not_parked_when_a_rebuild_applied_the_event_meanwhile(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap commits between a live handler's last failure and its parking: the rebuilt
    model has the event, so its aggregate must not be blocked."""
    engine = pipeline.runtime.engine
    store = engine.store_of("totals")
    engine.max_attempts = 1
    events = deposits(300, 4, seed=21)
    pipeline.feed("bank", events, apply=False)
    record_failure = store.record_failure
    swapped = []

    def fail_then_swap(*args: Any) -> int:
        attempts = record_failure(*args)
        if not swapped:  # the handler gets fixed, and a rebuild swaps in before block()
            monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
            swapped.append(pipeline.replayer("totals").run(ReplayOptions()))
        return attempts

    monkeypatch.setattr(store, "record_failure", fail_then_swap)
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-1")
    engine.catch_up()

    assert swapped and swapped[0].events == len(events)
    assert engine.parked("totals", status=None) == []
    with pipeline.runtime.log.engine.connect() as conn:
        for table in (blocked, failures):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    rows = pipeline.rows(account_totals)
    assert {k: r["total"] for k, r in rows.items()} == expected_totals(events)
    more = [
        ("account", "acct-1", "Deposited", {"amount": 5, "seq": last_seqs(events)["acct-1"] + 1})
    ]
    pipeline.feed("bank", more)
    assert pipeline.rows(account_totals)["acct-1"]["total"] == expected_totals(events)["acct-1"] + 5


# -- in place ----------------------------------------------------------------------------


def test_in_place_replay_only_for_replay_safe_projections(pipeline: Pipeline) -> None:
    events = deposits(400, 8, seed=11)
    pipeline.feed("bank", events)
    with pytest.raises(ReplayRefused, match="'totals' is not replay-safe"):
        pipeline.replayer("totals").run(ReplayOptions(from_position=0))
    with pytest.raises(ReplayRefused, match="add --from-position"):
        pipeline.replayer("last_deposit").run(ReplayOptions(source="bank"))
    with pytest.raises(ReplayRefused, match="does not subscribe to source 'auth'"):
        pipeline.replayer("last_deposit").run(ReplayOptions(from_position=0, source="auth"))

    good = pipeline.rows(last_deposit)
    pipeline.execute("UPDATE last_deposit SET amount = -1")
    last_event_of = {e[1]: i + 1 for i, e in enumerate(events)}
    position = 200
    summary = pipeline.replayer("last_deposit", batch=64).run(
        ReplayOptions(from_position=position, source="bank")
    )
    assert summary.mode == "in-place" and summary.events == len(events) - position
    rows = pipeline.rows(last_deposit)
    for account, row in rows.items():
        repaired = last_event_of[account] > position
        assert row["amount"] == (good[account]["amount"] if repaired else -1), account
    assert live_checkpoints(pipeline, "last_deposit") == {
        ("bank", p): len(events) for p in range(4)
    }


def test_in_place_replay_of_one_tenant(pipeline: Pipeline) -> None:
    events = deposits(300, 6, seed=12)
    pipeline.feed("bank", events, apply=False)
    pipeline.execute(
        "UPDATE rm_event_log SET tenant = CASE WHEN aggregate_id IN ('acct-1', 'acct-2') "
        "THEN 't1' ELSE 't2' END"
    )
    pipeline.runtime.engine.catch_up()
    pipeline.execute("UPDATE last_deposit SET amount = -1")
    summary = pipeline.replayer("last_deposit").run(ReplayOptions(from_position=0, tenant="t1"))
    rows = pipeline.rows(last_deposit)
    assert {k for k, r in rows.items() if r["amount"] != -1} == {"acct-1", "acct-2"}
    assert all(
        r["tenant"] == ("t1" if k in {"acct-1", "acct-2"} else "t2") for k, r in rows.items()
    )
    assert summary.events == sum(1 for e in events if e[1] in {"acct-1", "acct-2"})


class LiveBatchesBetween(ReplayHooks):
    """After each of the replay's first ``times`` batches, ``live`` runs (live batches
    applied between the replay's batches, beyond the head the replay started at)."""

    def __init__(self, live: Callable[[int], Any], times: int) -> None:
        self.live = live
        self.times = times
        self.batches = 0

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.batches += 1
        if self.batches <= self.times:
            self.live(self.batches)


def test_an_in_place_replay_re_applies_events_applied_live_meanwhile(pipeline: Pipeline) -> None:
    """Live batches apply an aggregate's newer events (beyond the checkpoint the replay
    started at) before the replay re-applies its older ones: the replay goes on to the
    lanes' checkpoints, so that no aggregate is left at an older state than the log."""
    events = deposits(400, 8, seed=13)
    pipeline.feed("bank", events)
    seqs = last_seqs(events)
    later: Events = []

    def live(batch: int) -> None:
        more = deposits(40, 8, seed=100 + batch, start={**seqs, **last_seqs(later)})
        later.extend(more)
        pipeline.feed("bank", more)

    hooks = LiveBatchesBetween(live, times=3)
    pipeline.replayer("last_deposit", hooks=hooks, batch=64).run(ReplayOptions(from_position=0))
    assert len(later) == 120
    everything = events + later
    expected = {account: payload for _, account, _, payload in everything}
    rows = pipeline.rows(last_deposit)
    assert {a: (r["amount"], r["seq"]) for a, r in rows.items()} == {
        a: (p["amount"], p["seq"]) for a, p in expected.items()
    }


# -- the CLI -----------------------------------------------------------------------------


def test_a_swap_invalidates_the_projections_cache_and_a_lost_invalidation_is_redone(
    pipeline: Pipeline,
) -> None:
    pipeline.feed("bank", deposits(200, 5, seed=21))
    engine = pipeline.runtime.engine
    projection = engine.projection("totals")
    store = engine.store_of(projection)
    store.journal_invalidations = True
    cache, loads = MemoryCache(), []

    def cached() -> Any:
        def load() -> dict[str, int]:
            loads.append(1)
            return {"loads": len(loads)}

        return cache.get_or_load("totals", "acct-1", ["account:acct-1"], load)

    cached(), cached()
    assert len(loads) == 1

    # Redis is unreachable at the swap: the whole-projection invalidation stays journaled.
    dead = RedisCache(dead_redis_url(), key_prefix=fresh_prefix(), timeout=0.05)
    try:
        Replayer(engine.reader, projection, store, cache=dead).run(ReplayOptions())
    finally:
        dead.close()
    pending = store.pending_invalidations()
    assert [(i.projection, i.tags) for i in pending] == [("totals", (WHOLE_PROJECTION,))]
    cached()
    assert len(loads) == 1  # not invalidated yet

    assert invalidations.redo(cache, [store]) == 1
    assert store.pending_invalidations() == []
    cached()
    assert len(loads) == 2

    Replayer(engine.reader, projection, store, cache=cache).run(ReplayOptions())
    assert store.pending_invalidations() == []
    cached()
    assert len(loads) == 3


def test_a_swap_wipe_cut_short_after_its_first_chunk_is_redone(pipeline: Pipeline) -> None:
    """The swap wipes the projection's cache a chunk at a time. Redis lost after the first
    chunk: the journal row stays (the wipe is not done; the old code, one script, could not
    stop half-way), and redoing it deletes the rest, leaving other projections alone."""
    pipeline.feed("bank", deposits(200, 5, seed=22))
    engine = pipeline.runtime.engine
    projection = engine.projection("totals")
    store = engine.store_of(projection)
    store.journal_invalidations = True
    with redis_prefix() as prefix, redis.Redis.from_url(REDIS_URL) as client:
        cache = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0, wipe_chunk=1_000)
        try:
            fill_entries(prefix, "totals", 20_000, {"total": -1})
            fill_entries(prefix, "other", 100, {"kept": True})
            done = 0
            send = cache.client.execute_command

            def flaky(*args: Any, **options: Any) -> Any:
                nonlocal done
                if args[0] == "EVALSHA" and done == 2:  # the wipe's start, its first chunk
                    raise redis.ConnectionError("lost after the first chunk")
                result = send(*args, **options)
                done += args[0] == "EVALSHA"
                return result

            cache.client.execute_command = flaky  # type: ignore[method-assign]
            Replayer(engine.reader, projection, store, cache=cache).run(ReplayOptions())
            cache.client.execute_command = send  # type: ignore[method-assign]

            pending = store.pending_invalidations()
            assert [(i.projection, i.tags) for i in pending] == [("totals", (WHOLE_PROJECTION,))]
            entries = [f"{prefix}e:totals:k{i}" for i in range(20_000)]
            assert client.exists(*entries) == 19_000
            assert invalidations.redo(cache, [store]) == 1
            assert store.pending_invalidations() == []
            assert client.exists(*entries) == 0
            assert client.exists(*[f"{prefix}e:other:k{i}" for i in range(100)]) == 100
        finally:
            cache.close()


def test_cli_dry_run_confirmation_and_exit_codes(pipeline: Pipeline, tmp_path: Path) -> None:
    events = deposits(300, 9, seed=13)
    pipeline.feed("bank", events)
    pipeline.execute("UPDATE account_totals SET total = 0")
    config = str(pipeline_config(tmp_path, pipeline))
    before, tables_before = pipeline.rows(account_totals), pipeline.tables()
    cps = live_checkpoints(pipeline, "totals")

    dry = run_cli(["replay", "totals", "--dry-run", "--config", config])
    assert dry.exit_code == 0, dry.output
    assert "blue/green" in dry.stdout and "account_totals__rebuild" in dry.stdout
    assert "300" in dry.stdout and "dry run: nothing was changed" in dry.stdout
    assert pipeline.rows(account_totals) == before and pipeline.tables() == tables_before
    assert live_checkpoints(pipeline, "totals") == cps

    no_yes = run_cli(["replay", "totals", "--config", config])
    assert no_yes.exit_code == 2 and "pass --yes" in no_yes.stderr
    assert pipeline.rows(account_totals) == before

    for args, code, text in [
        (["replay", "nope", "--yes"], 2, "unknown projection 'nope'"),
        (["replay", "totals", "--from-position", "5", "--yes"], 2, "not replay-safe"),
        (["replay", "totals", "--tenant", "t1", "--yes"], 2, "add --from-position"),
    ]:
        result = run_cli([*args, "--config", config])
        assert result.exit_code == code and text in result.stderr, (args, result.output)

    store = pipeline.runtime.engine.store_of("totals")
    with replay_lock(store, "totals"):  # type: ignore[arg-type]
        busy = run_cli(["replay", "totals", "--yes", "--config", config])
    assert busy.exit_code == 1 and "another replay of 'totals' is running" in busy.stderr

    done = run_cli(["replay", "totals", "--yes", "--config", config])
    assert done.exit_code == 0, done.output
    assert "rebuilt and swapped in: 300 events" in done.stdout
    rows = pipeline.rows(account_totals)
    assert {k: r["total"] for k, r in rows.items()} == expected_totals(events)

    safe = run_cli(
        ["replay", "last_deposit", "--from-position", "100", "--yes", "--config", config]
    )
    assert safe.exit_code == 0 and "replayed in place: 200 events" in safe.stdout


def test_ctrl_c_on_the_cli_leaves_the_live_model_and_a_removable_shadow(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A real SIGINT to a ``readmodel replay`` process half-way through the rebuild."""
    applied = deposits(300, 9, seed=15)
    pipeline.feed("bank", applied)
    pipeline.feed("bank", deposits(20_000, 50, seed=16, start=last_seqs(applied)), apply=False)
    pipeline.execute("UPDATE account_totals SET total = 7")
    before, cps = pipeline.rows(account_totals), live_checkpoints(pipeline, "totals")
    config = str(pipeline_config(tmp_path, pipeline))
    command = [sys.executable, "-m", "workers.cli", "replay", "totals", "--yes"]
    replay = subprocess.Popen(
        [*command, "--batch-size", "50", "--config", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, SLOW: "0.001"},  # 20 s at least: the signal comes half-way
    )
    try:
        shadow = sa.select(sa.func.max(checkpoints.c.position)).where(
            checkpoints.c.projection == "totals__rebuild"
        )
        deadline = time.monotonic() + 60
        while True:  # until the shadow holds some batches
            assert replay.poll() is None, replay.communicate()
            assert time.monotonic() < deadline, "the rebuild never started"
            with pipeline.runtime.log.engine.connect() as conn:
                if (conn.execute(shadow).scalar() or 0) > 1000:
                    break
            time.sleep(0.02)
        replay.send_signal(signal.SIGINT)
        _, stderr = replay.communicate(timeout=60)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()

    assert replay.returncode == 130, stderr
    assert "interrupted: the live model of 'totals' is untouched" in stderr
    with pipeline.runtime.log.engine.connect() as conn:
        assert (conn.execute(shadow).scalar() or 0) < 20_300  # it stopped half-way
    assert pipeline.rows(account_totals) == before
    assert live_checkpoints(pipeline, "totals") == cps
    assert "account_totals__rebuild" in pipeline.tables()

    cleanup = run_cli(["replay", "totals", "--cleanup", "--config", config])
    assert cleanup.exit_code == 0 and "account_totals__rebuild" in cleanup.stdout
    assert "account_totals__rebuild" not in pipeline.tables()
    assert pipeline.rows(account_totals) == before


def test_cli_reports_the_failing_event_and_skips_with_skip_errors(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(200, 5, seed=14)
    pipeline.feed("bank", events)
    config = str(pipeline_config(tmp_path, pipeline))
    env = {"READMODEL_TEST_FAIL_ON": "acct-4"}
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-4")
    position = 1 + next(i for i, e in enumerate(events) if e[1] == "acct-4")
    failed = run_cli(["replay", "totals", "--yes", "--config", config], env=env)
    assert failed.exit_code == 1
    assert f"replay stopped at bank:{position}" in failed.stderr
    skipped = run_cli(["replay", "totals", "--yes", "--skip-errors", "--config", config], env=env)
    assert skipped.exit_code == 0, skipped.output
    count = sum(1 for e in events if e[1] == "acct-4")
    assert f"skipped {count} events" in skipped.stdout
    assert f"bank:{position} Deposited account:acct-4" in skipped.stdout


fk_metadata = sa.MetaData()
fk_orders = sa.Table(
    "fk_orders",
    fk_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("lines", sa.Integer, nullable=False),
)
fk_lines = sa.Table(
    "fk_lines",
    fk_metadata,
    sa.Column(
        "order_id",
        sa.Text,
        sa.ForeignKey("fk_orders.id", name="fk_lines_order_fk"),
        primary_key=True,
    ),
    sa.Column("line", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sku", sa.Text, nullable=False),
)


class OrderBook(Projection):
    """Two tables joined by a foreign key; the handlers write the referencing rows first."""

    name = "order_book"
    tables = (fk_lines, fk_orders)

    @on("shop", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        skus = event.payload["skus"]
        for line, sku in enumerate(skus):
            tx.upsert(fk_lines, {"order_id": event.aggregate_id, "line": line, "sku": sku})
        tx.upsert(fk_orders, {"id": event.aggregate_id, "lines": len(skus)})

    @on("shop", "Cancelled")
    def cancelled(self, event: Event[dict], tx: Tx) -> None:
        order = tx.get(fk_orders, event.aggregate_id)
        if order is not None:
            tx.delete(fk_orders, event.aggregate_id)
            for line in range(order["lines"]):
                tx.delete(fk_lines, (event.aggregate_id, line))


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_tables_joined_by_a_foreign_key_apply_live_and_rebuild(
    kind: str, database_for: Callable[[str], str]
) -> None:
    rng = random.Random(12)
    events: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(60):
        events.append((f"o{n}", "Placed", {"skus": [f"s{rng.randrange(9)}"] * rng.randint(1, 3)}))
        if n % 4 == 3:
            events.append((f"o{rng.randrange(n)}", "Cancelled", {}))
    url = database_for(kind)
    projection = OrderBook()
    with engine_on(url, [projection], batch_size=7) as (log, store, engine):
        head = log_events(log, events)
        for lane in engine.lanes(projection):
            engine.process(lane, head)  # batches with lines before orders, deletes of both

        def model() -> tuple[list[Any], list[Any]]:
            with log.engine.connect() as conn:
                return (
                    conn.execute(sa.select(fk_orders).order_by(fk_orders.c.id)).all(),
                    conn.execute(sa.select(fk_lines).order_by(*fk_lines.primary_key)).all(),
                )

        live = model()
        assert len(live[0]) < 60 and sum(o.lines for o in live[0]) == len(live[1])
        for _ in range(2):
            summary = Replayer(engine.reader, projection, store, batch_size=10).run(ReplayOptions())
            assert summary.events == head and model() == live
        assert not any(
            t.endswith(("__rebuild", "__old")) for t in sa.inspect(log.engine).get_table_names()
        )
        if kind == "postgresql":
            with log.engine.connect() as conn:
                keys = conn.exec_driver_sql(
                    "SELECT conname, confrelid::regclass::text FROM pg_constraint "
                    "WHERE conrelid = 'fk_lines'::regclass AND contype = 'f'"
                ).all()
            assert keys == [("fk_lines_order_fk", "fk_orders")]


defaults_metadata = sa.MetaData()
counted = sa.Table(
    "counted_items",
    defaults_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("hits", sa.Integer, nullable=False, default=0),
    sa.Column("label", sa.Text, default=lambda: "fresh"),
    sa.Column("serial", sa.BigInteger, sa.Sequence("counted_items_serial_seq")),
)


class CountedItems(Projection):
    """Rows created from their key alone: the columns' client-side defaults fill the rest."""

    name = "counted_items"
    tables = (counted,)

    @on("shop", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(counted, {"id": event.aggregate_id})

    @on("shop", "Cancelled")
    def hit(self, event: Event[dict], tx: Tx) -> None:
        row = tx.get(counted, event.aggregate_id)
        tx.upsert(counted, {"id": event.aggregate_id, "hits": row["hits"] + 1})


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_client_side_column_defaults_fill_rows_live_and_in_a_rebuild(
    kind: str, database_for: Callable[[str], str]
) -> None:
    events = [(f"i{n % 5}", "Placed" if n < 5 else "Cancelled", {}) for n in range(12)]
    url = database_for(kind)
    projection = CountedItems()
    with engine_on(url, [projection], batch_size=4) as (log, store, engine):
        head = log_events(log, events)
        for lane in engine.lanes(projection):
            engine.process(lane, head)

        def model() -> list[tuple[Any, ...]]:
            with log.engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.select(counted).order_by(counted.c.id))]

        expected = [(f"i{n}", 2 if n < 2 else 1, "fresh") for n in range(5)]
        for _ in range(3):  # live, then two rebuilds (the second finds the sequence in use)
            rows = model()
            assert [row[:3] for row in rows] == expected
            serials = [row[3] for row in rows]
            if kind == "postgresql":
                assert None not in serials and len(set(serials)) == 5
            Replayer(engine.reader, projection, store, batch_size=3).run(ReplayOptions())


def long_names(kind: str) -> tuple[sa.Table, type[Projection]]:
    """A table whose suffixed shadow names would pass PostgreSQL's 63 bytes (with an
    identity column on PostgreSQL: its sequence is named after the table)."""
    serial = [sa.Identity()] if kind == "postgresql" else []
    table = sa.Table(
        "t" * 60,
        sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("amount", sa.Integer, nullable=False, index=True),
        sa.Column("serial", sa.Integer, *serial),
        sa.UniqueConstraint("amount", name=f"{'u' * 56}_key"),
    )

    class LongNames(Projection):
        name = "long_names"
        tables = (table,)

        @on("shop", "Placed")
        def placed(self, event: Event[dict], tx: Tx) -> None:
            tx.upsert(table, {"id": event.aggregate_id, "amount": len(event.aggregate_id)})

    return table, LongNames


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_tables_with_names_near_the_identifier_limit_rebuild_and_keep_their_names(
    kind: str, database_for: Callable[[str], str]
) -> None:
    long_table, projection_class = long_names(kind)
    url = database_for(kind)
    projection = projection_class()
    with engine_on(url, [projection], batch_size=4) as (log, store, engine):
        head = log_events(log, [(f"o{'x' * n}", "Placed", {}) for n in range(9)])
        for lane in engine.lanes(projection):
            engine.process(lane, head)

        def state() -> tuple[Any, ...]:
            with log.engine.connect() as conn:
                inspector = sa.inspect(conn)
                return (
                    sorted(conn.execute(sa.select(long_table.c.id, long_table.c.amount)).all()),
                    sorted(i["name"] for i in inspector.get_indexes(long_table.name)),
                    sorted(u["name"] for u in inspector.get_unique_constraints(long_table.name)),
                    sorted(inspector.get_table_names()),
                    sorted(conn.execute(sa.select(long_table.c.serial)).scalars(), key=str),
                )

        live = state()
        assert len(live[0]) == 9 and live[1] and live[2] == [f"{'u' * 56}_key"]
        assert live[4] == (list(range(1, 10)) if kind == "postgresql" else [None] * 9)
        for _ in range(2):
            summary = Replayer(engine.reader, projection, store, batch_size=5).run(ReplayOptions())
            assert summary.events == head and state() == live


def test_indexes_and_foreign_keys_alike_but_for_a_detail_keep_their_own_names(
    database_for: Callable[[str], str],
) -> None:
    """Pairing a live table's indexes and constraints with the shadow's by what they cover
    alone swapped the names of two foreign keys on one column and of partial indexes."""
    metadata = sa.MetaData()
    parents = [
        sa.Table(f"pair_p{n}", metadata, sa.Column("id", sa.Text, primary_key=True)) for n in (1, 2)
    ]
    child = sa.Table(
        "pair_child",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("ref", sa.Text),
        sa.Column("a", sa.Integer),
        sa.ForeignKeyConstraint(["ref"], ["pair_p1.id"], name="fk_child_p1"),
        sa.ForeignKeyConstraint(["ref"], ["pair_p2.id"], name="fk_child_p2"),
        *[sa.Index(f"ix_partial_{n}", "a", postgresql_where=sa.text(f"a > {n}")) for n in range(4)],
    )

    class Pairs(Projection):
        name = "pairs"
        tables = (*parents, child)

        @on("shop", "Placed")
        def placed(self, event: Event[dict], tx: Tx) -> None:
            for parent in parents:
                tx.upsert(parent, {"id": "p"})
            tx.upsert(child, {"id": event.aggregate_id, "ref": "p", "a": 3})

    def catalog() -> list[Any]:
        with log.engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT conname, confrelid::regclass::text FROM pg_constraint "
                "WHERE conrelid = 'pair_child'::regclass AND contype = 'f' UNION ALL "
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'pair_child' "
                "ORDER BY 1"
            ).all()

    projection = Pairs()
    with engine_on(database_for("postgresql"), [projection]) as (log, store, engine):
        head = log_events(log, [("o1", "Placed", {}), ("o2", "Placed", {})])
        for lane in engine.lanes(projection):
            engine.process(lane, head)
        live = catalog()
        assert ("fk_child_p2", "pair_p2") in live
        for _ in range(2):
            Replayer(engine.reader, projection, store).run(ReplayOptions())
            assert catalog() == live
