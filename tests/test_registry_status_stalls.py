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
from tests.cli_helpers import run_cli
from tests.stall_proxy_helpers import stall_proxy
from tests.tenant_fixtures import REGISTRY_QUERY, init_tenant_outbox, make_registry
from tests.tenant_helpers import config_for
from workers.runtime import build_runtime
from workers.status import collect

MARKER = REGISTRY_QUERY.split(" WHERE")[0].encode()


def _reads() -> int:
    return sum(t.name == "status-pos" and t.is_alive() for t in threading.enumerate())


def test_a_stalled_registry_read_of_a_status_look_is_ended(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, a = (pg_database() for _ in range(3))
    init_tenant_outbox(a)
    make_registry(pos, {"a": a})
    with stall_proxy(pos, MARKER) as proxy:
        config = config_for(tmp_path, store, proxy.url(pos))
        assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
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
