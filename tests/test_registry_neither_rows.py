"""Two rows of one tenant registry naming one database, when the event log has events of
neither: both are refused, and the refusal says why (no row has events in the log yet, so
none can be kept) and how to resolve it (delete or fix one row), in ``relay --once``,
``status`` and ``outbox init`` alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.cli_helpers import run_cli
from tests.tenant_fixtures import init_tenant_outbox, make_registry
from tests.tenant_helpers import config_for

WHY = "the event log has no events of either row yet, so no row can be kept"
FIX = "delete or fix one row"


def test_both_rows_refused_say_why_and_how_to_resolve(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared, zeta = (pg_database() for _ in range(4))
    init_tenant_outbox(shared)
    init_tenant_outbox(zeta)
    make_registry(
        registry,
        {"acme": shared, "acme2": shared.replace("127.0.0.1", "localhost"), "zeta": zeta},
    )
    config = str(config_for(tmp_path, store, registry))
    assert run_cli(["migrate", "--config", config]).exit_code == 0
    commands = (
        ["relay", "--once"],
        ["status", "--timeout", "30"],
        ["outbox", "init", "--source", "pos"],
    )
    for command in commands:
        result = run_cli([*command, "--config", config])
        output = " ".join(result.output.split())  # tables and long lines wrap
        for tenant in ("acme", "acme2"):
            refusal = f"tenant registry 'pos', tenant '{tenant}': the same database"
            assert refusal in output, (command, output)
        assert output.count(WHY) >= 2, (command, output)
        assert FIX in output, (command, output)
        assert result.exit_code == 2, (command, result.output)
