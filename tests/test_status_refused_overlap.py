"""A tenant registry member refused because another registry's member reads its database
(and outbox table) is not read by ``status``, ``health`` or a metrics scrape: its figures
would not be shown, and a database that stalls for it would hold a thread and a connection
per look. The member that keeps the database is read as any other."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from config import load_settings
from tests.cli_helpers import run_cli
from tests.stall_proxy_helpers import stall_proxy
from tests.tenant_fixtures import init_tenant_outbox, make_registry, record_sales, sales_for
from tests.tenant_helpers import registries_config
from workers.parts import Running
from workers.runtime import build_runtime
from workers.status import collect

MARKER = b"rm-refused-member"  # in the refused member's DSN only (its application_name)


def _reads_of_refused() -> int:
    return sum("shop:acme2" in t.name and t.is_alive() for t in threading.enumerate())


def test_a_member_refused_for_a_shared_database_is_not_read(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, shop, shared = (pg_database() for _ in range(4))
    init_tenant_outbox(shared)
    record_sales(shared, sales_for(1, 2))
    with stall_proxy(shared, MARKER) as proxy:
        keeper = proxy.url(shared)  # both through the proxy: one database, one outbox
        make_registry(pos, {"acme": keeper})
        make_registry(shop, {"acme2": f"{keeper}?application_name={MARKER.decode()}"})
        config = registries_config(tmp_path, store, {"pos": pos, "shop": shop})
        assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
        runtime = build_runtime(load_settings(config), migrate=False)
        running = Running()  # as status --watch and the metrics exporter keep it
        try:
            for _ in range(3):
                report = collect(runtime, timeout=2.0, running=running)
                sources = {s.source: s for s in report.sources}
                assert sources["pos:acme"].error is None, sources["pos:acme"]
                assert sources["pos:acme"].undelivered == 2
                refused = sources["shop:acme2"]
                assert refused.database_conflict and refused.undelivered is None, refused
                assert "tenant 'acme' of tenant registry 'pos'" in (refused.error or "")
        finally:
            runtime.close()
        assert proxy.stalls == 0, "the refused member's database was asked"
        assert _reads_of_refused() == 0
