"""A worker process whose handler hangs on one account's events (the status, health and
metrics tests of handlers past ``engine.handler_timeout``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import load_settings
from outbox.log import EventLog
from tests.broker_helpers import Processes, wait_until
from tests.cache_helpers import append
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox
from tests.projection_fixtures import HANG_HOW, HANG_ON

HUNG = "acct-1"


def start_hung_worker(
    tmp_path: Path,
    store_url: str,
    source_url: str,
    broker: dict[str, Any],
    processes: Processes,
    how: str,
    **tables: dict[str, Any],
) -> tuple[Path, str]:
    """Events of acct-0..acct-3 in the log (two each) and a ``work`` process (1 x 2 threads,
    ``handler_timeout`` 1 s, ``max_attempts`` 2) whose handler hangs on acct-1's (``how``:
    :data:`tests.projection_fixtures.HANG_HOW`); ``tables``: more configuration tables
    (``health=``, ``metrics=``). Returns the config and the worker's key."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "broker": broker,
            "sources": {"bank": {"url": source_url}},
            "engine": {
                "handler_timeout": "1s",
                "max_attempts": 2,
                "retry_backoff": "100ms",
                "sweep_every": "1h",
            },
            "shutdown": {"grace": "2s"},
            **tables,
        },
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    log = EventLog(store_url)
    try:
        events = [
            ("account", f"acct-{a}", "Deposited", {"amount": 1, "seq": seq})
            for seq in (1, 2)
            for a in range(4)
        ]
        append(log, "bank", events)  # the worker's first sweep sends every lane's message
    finally:
        log.close()
    env = {HANG_ON: HUNG, HANG_HOW: how}
    key = processes.start("work", "work", "--config", str(config), "-p", "1", "-t", "2", env=env)
    assert wait_until(lambda: processes.worker_started(key), 60), processes.log_tail()
    return config, key
