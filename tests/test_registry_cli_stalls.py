"""The one-shot commands that read a tenant registry (``outbox init``, ``outbox
binary-ids``, ``run --until-caught-up``'s check) give a stalled read up past the read bound
(30 s) and exit 3 naming the registry, as ``relay --once`` does: they hung until the stall
ended."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import outbox.registry_reads
from config import load_settings
from outbox.tenant_registry import list_sources
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli
from tests.stall_fixtures import MARKER, stalled_registry
from tests.stall_proxy_helpers import stall_proxy
from tests.tenant_fixtures import init_tenant_outbox, make_registry
from tests.tenant_helpers import config_for


@pytest.mark.parametrize(
    "command",
    [
        ["outbox", "init", "--source", "pos"],
        ["outbox", "binary-ids", "pos:b", "text", "--yes"],
    ],
    ids=["outbox init", "outbox binary-ids"],
)
def test_a_command_reading_a_stalled_registry_gives_it_up(
    pg_database: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    monkeypatch.setattr(outbox.registry_reads, "READ_BOUND", 1.0)  # 30 s
    with stalled_registry(pg_database, tmp_path) as (config, proxy, store):
        result: list = []
        started = time.monotonic()
        thread = threading.Thread(
            target=lambda: result.append(run_cli([*command, "--config", str(config)])),
            daemon=True,
        )
        thread.start()
        thread.join(20)
        assert result, f"{' '.join(command)} never returns while the registry stalls"
        assert time.monotonic() - started < 15
        (ran,) = result
        assert ran.exit_code == 3, ran.output
        assert "tenant registry 'pos': its read gave no answer within 1s" in ran.output
        (warning,) = [
            line for line in ran.output.splitlines() if "registry read gives no answer" in line
        ]
        assert "given up" in warning  # one-shot: no retry follows, none is promised
        assert "read again" not in warning and "retry_in" not in warning, warning
        assert wait_until(lambda: proxy.live() == 0, 5), proxy.live()


def test_listing_the_sources_gives_a_stalled_registry_up(
    pg_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What run --until-caught-up checks after each drain, and status without a timeout.
    monkeypatch.setattr(outbox.registry_reads, "READ_BOUND", 1.0)  # 30 s
    store, pos, a = (pg_database() for _ in range(3))
    init_tenant_outbox(a)
    make_registry(pos, {"a": a})
    with stall_proxy(pos, MARKER) as proxy:
        settings = load_settings(config_for(tmp_path, store, proxy.url(pos)))
        result: list = []
        thread = threading.Thread(target=lambda: result.append(list_sources(settings)), daemon=True)
        thread.start()
        thread.join(10)
        assert result, "listing the sources never returns while the registry stalls"
        (unlisted,) = result[0].unlisted
        assert unlisted.source == "pos" and "gave no answer within 1s" in unlisted.error
        assert wait_until(lambda: proxy.live() == 0, 5), proxy.live()
