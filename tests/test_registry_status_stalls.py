"""``status``, ``health`` and the metrics exporter read the tenant registries within their
``--timeout``: a registry whose read stalls (a TCP stall mid-query) is reported as not
answering, and its read is ended, so a long-running caller (``status --watch``, the
metrics exporter) keeps no thread and connection per look."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from config import load_settings
from tests.broker_helpers import wait_until
from tests.stall_fixtures import stalled_registry
from workers.runtime import build_runtime
from workers.status import collect


def _reads() -> int:
    return sum(t.name == "status-pos" and t.is_alive() for t in threading.enumerate())


def test_a_stalled_registry_read_of_a_status_look_is_ended(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    with stalled_registry(pg_database, tmp_path) as (config, proxy, store):
        runtime = build_runtime(load_settings(config), migrate=False)
        try:
            for _ in range(3):
                report = collect(runtime, timeout=0.5)
                (pos_status,) = [s for s in report.sources if s.source == "pos"]
                assert "no answer" in (pos_status.error or ""), pos_status
            assert wait_until(lambda: proxy.live() == 0 and _reads() == 0, 5), (
                proxy.live(),
                _reads(),
            )
        finally:
            runtime.close()
