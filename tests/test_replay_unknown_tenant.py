"""``readmodel replay P --from-position N --tenant T`` with a tenant no event of P's sources
has in the log replayed nothing and exited 0: a mistyped tenant passed for a repair. It is
refused (exit 2, ``--dry-run`` too), naming the tenant and the tenants the log has for
those sources (names only; another source's tenants are not listed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.projection_fixtures import append_tenant_events
from tests.replay_helpers import Pipeline, pipeline_config, query


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
def test_a_tenant_with_no_event_in_the_log_is_refused(
    make_pipeline: Callable[[str], Pipeline], engine_name: str, tmp_path: Path
) -> None:
    p = make_pipeline(engine_name)
    deposit = {"amount": 5, "seq": 1}
    append_tenant_events(
        p.runtime.log,
        [("shop-b", "acct-2", "Deposited", deposit), ("shop-a", "acct-1", "Deposited", deposit)],
    )
    append_tenant_events(
        p.runtime.log, [("shop-c", "o-1", "OrderPaid", {})], source="orders", aggregate_type="o"
    )
    p.runtime.engine.catch_up()
    p.execute("UPDATE last_deposit SET amount = 0")
    config = str(pipeline_config(tmp_path, p))
    replay = ["replay", "last_deposit", "--from-position", "0", "--config", config]

    for extra in (["--dry-run"], ["--yes"]):
        result = run_cli([*replay, "--tenant", "shop-x", *extra])
        assert result.exit_code == 2, result.output
        said = " ".join(result.stderr.split())
        assert "--tenant 'shop-x': no event of that tenant is in the log" in said, said
        assert "the tenants it has there: shop-a, shop-b (" in said, said
        assert "shop-c" not in said and "acct" not in said, said
    rows = "SELECT account, amount FROM last_deposit ORDER BY 1"
    assert query(p, rows) == [("acct-1", 0), ("acct-2", 0)]

    done = run_cli([*replay, "--tenant", "shop-a", "--yes"])
    assert done.exit_code == 0, done.output
    assert query(p, rows) == [("acct-1", 5), ("acct-2", 0)]
