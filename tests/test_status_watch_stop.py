"""``status --watch`` stops on Ctrl-C (or SIGTERM) while a source has not answered yet: a
source whose outbox is locked makes the read wait its whole --timeout, which held the exit
that long (an hour here) with nothing said."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from config import load_settings
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox


@pytest.mark.parametrize(
    ("as_json", "signum"),
    [(False, signal.SIGINT), (True, signal.SIGTERM)],
    ids=["table-SIGINT", "json-SIGTERM"],
)
def test_watch_exits_0_on_a_signal_while_a_source_holds_the_read(
    pg_database: Callable[[], str], tmp_path: Path, as_json: bool, signum: signal.Signals
) -> None:
    source_url = pg_database()
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path}/store.db"},
            "sources": {"shop": {"url": source_url}},
        },
    )
    init_outbox(load_settings(config).sources["shop"], "shop")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    dsn = source_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as watcher:
        holder.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        command = [sys.executable, "-m", "workers.cli", "status", "--watch", "--timeout", "3600"]
        command += ["--config", str(config), *(["--json"] if as_json else [])]
        watch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            waiting = 0
            for _ in range(600):  # until its read of the outbox waits for the lock
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchone()[0]
                if waiting or watch.poll() is not None:
                    break
                time.sleep(0.1)
            assert waiting == 1, watch.communicate(timeout=10)

            watch.send_signal(signum)
            out, err = watch.communicate(timeout=60)  # not the hour of its --timeout
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.communicate()

    assert watch.returncode == 0, err
    assert "Traceback" not in err and "error" not in err, err
