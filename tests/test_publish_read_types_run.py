"""End to end, with the publisher waking only the lanes of projections that read a batch's
types: a running ``readmodel run`` (relay, Redis broker, worker, sweeper) fed interleaved
read and unread types still applies every subscribed event once and in order, and the lanes
it never messaged (a last batch of types ``Totals`` does not read) reach the log head by the
sweeper."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from outbox.log import EventLog
from projections.store_tables import checkpoints
from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import account_totals, balances

ACCOUNTS = [f"acct-{i}" for i in range(8)]
ROUNDS = 6


def _round(n: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Each account: a deposit of 10 (``seq`` n, read by both projections), an audit (read by
    neither), a withdrawal of 4 (read by Balances only), interleaved across accounts."""
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    for account in ACCOUNTS:
        out.append(("account", account, "Deposited", {"amount": 10, "seq": n}))
        out.append(("account", account, "Audited", {"by": "x"}))
    for account in ACCOUNTS:
        out.append(("account", account, "Withdrawn", {"amount": 4}))
    return out


def _lanes(engine: sa.Engine, projection: str) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(checkpoints.c.partition, checkpoints.c.position).where(
                checkpoints.c.projection == projection, checkpoints.c.source == "bank"
            )
        ).all()
    return {int(p): int(position) for p, position in rows}


def test_unread_types_are_passed_over_and_read_ones_applied_once_in_order(
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
    tmp_path: Path,
) -> None:
    store_url, source_url = pg_database(), sqlite_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": [
                "tests.projection_fixtures:Totals",
                "tests.projection_fixtures:Balances",
            ],
            "store": {"url": store_url},
            "sources": {"bank": {"url": source_url, "batch_size": 20}},
            "broker": broker_for("redis"),
            "engine": {"sweep_every": "1s"},
        },
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source, store = create_engine(source_url), create_engine(store_url)
    log = EventLog(store_url)
    try:
        processes.start("run", "run", "-t", "4", "--config", str(config))
        written = 0
        for n in range(1, ROUNDS + 1):  # several transactions, batches of 20 across them
            events = _round(n)
            insert_events(source, events)
            written += len(events)
        assert wait_until(lambda: log.head("bank") == written, 60), processes.log_tail()

        # A last batch of types Totals does not read: the relay messages none of its lanes.
        last = [
            ("account", a, t, {"amount": 1}) for a in ACCOUNTS for t in ("Audited", "Withdrawn")
        ]
        insert_events(source, last)
        head = written + len(last)
        at_head = {p: head for p in range(4)}
        assert wait_until(lambda: _lanes(store, "totals") == at_head, 60), processes.log_tail()
        assert wait_until(lambda: _lanes(store, "balances") == {0: head, 1: head}, 60), (
            processes.log_tail()
        )

        with store.connect() as conn:
            totals = {r.account: r for r in conn.execute(sa.select(account_totals))}
            balance = {r.account: r for r in conn.execute(sa.select(balances))}
        assert sorted(totals) == sorted(balance) == ACCOUNTS
        for account in ACCOUNTS:
            row = totals[account]
            assert (row.events, row.total, row.last_seq, row.violations) == (
                ROUNDS,
                10 * ROUNDS,
                ROUNDS,
                0,
            ), row
            assert (balance[account].balance, balance[account].rejected) == (6 * ROUNDS - 1, 0)
    finally:
        log.close()
        source.dispose()
        store.dispose()
    assert all(code == 0 for code in processes.stop_all().values()), processes.log_tail()
