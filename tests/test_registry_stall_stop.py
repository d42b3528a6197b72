"""SIGTERM while a running relay's read of its tenant registry stalls (a TCP stall
mid-query, which only the 30 s read bound ends): the relay stops at once, exit 0, its read
ended, as when it is idle; it does not wait for the bound, past ``shutdown.grace``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.broker_helpers import wait_until
from tests.relay_helpers import READMODEL
from tests.stall_fixtures import stalled_registry


def test_sigterm_during_a_stalled_registry_read_stops_the_relay_at_once(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    with stalled_registry(pg_database, tmp_path) as (config, proxy, store):
        log_path = tmp_path / "relay.log"
        with open(log_path, "wb") as log_file:
            relay = subprocess.Popen(
                [str(READMODEL), "relay", "--config", str(config)],
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            assert wait_until(lambda: proxy.stalled() > 0, 20), log_path.read_text()
            time.sleep(0.5)  # the read is stuck in the stall
            signalled = time.monotonic()
            os.killpg(relay.pid, signal.SIGTERM)
            code = relay.wait(timeout=40)
            took = time.monotonic() - signalled
            output = log_path.read_text()
            assert code == 0, output
            assert took < 5, (took, output)  # shutdown.grace is 10 s; the read bound 30 s
            assert "did not stop" not in output
            assert "tenant registry unreadable" not in output  # stopping is no failure
            assert wait_until(lambda: proxy.live() == 0, 5), proxy.live()
        finally:
            if relay.poll() is None:
                os.killpg(relay.pid, signal.SIGKILL)
                relay.wait()
