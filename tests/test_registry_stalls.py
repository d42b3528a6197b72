"""A tenant registry whose connection stalls mid-query (a TCP proxy that stops forwarding,
while the kernel ACKs: neither the statement timeout nor keepalives see it): its reads, its
own relay's and its peers', are given up past the read bound, warned about, and ended."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import outbox.registry_reads
from config import load_settings
from outbox.errors import SourceError
from outbox.log import EventLog
from outbox.registry_peers import Peers
from outbox.registry_reads import read_within
from outbox.tenant_registry import TenantRegistry
from outbox.tenant_relays import TenantRelays
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli
from tests.stall_fixtures import MARKER, stalled_peer, stalled_registry
from tests.stall_proxy_helpers import stall_proxy
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    record_sales,
    sales_for,
    tenant_source,
)
from tests.tenant_helpers import config_for


def _threads(prefix: str) -> int:
    return sum(t.name.startswith(prefix) and t.is_alive() for t in threading.enumerate())


def _given_up(logs: list[dict], registry: str) -> list[dict]:
    return [
        e
        for e in logs
        if e["event"].startswith("tenant registry read gives no answer")
        and e.get("registry") == registry
    ]


def test_given_up_peer_reads_end_their_threads_and_connections(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    with stalled_peer(pg_database, tmp_path) as (config, proxy, store):
        settings = load_settings(config)
        log = EventLog(store)
        peers = Peers(settings, log.engine, read_bound=0.5)
        registry = TenantRegistry("pos", settings.tenants["pos"], settings.sources)
        relays = TenantRelays(registry, log, settings.relay, peers=peers)
        try:
            with capture_logs() as logs:
                deadline = time.monotonic() + 20  # 3 give-ups: ~6 s (back-offs of 0, 4 s)
                while len(_given_up(logs, "shop")) < 3 and time.monotonic() < deadline:
                    relays.read(peer_wait=0.6)
            assert len(_given_up(logs, "shop")) >= 3, logs
            # Each given-up read was ended: its thread and its connection through the
            # proxy are gone; only the read in flight, if any, is left.
            assert wait_until(lambda: proxy.live() <= 1 and _threads("peer-shop") <= 1, 5), (
                proxy.live(),
                _threads("peer-shop"),
            )
        finally:
            registry.close()
            log.close()


def test_a_running_relays_own_registry_read_is_bounded_warned_and_retried(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    with stalled_registry(pg_database, tmp_path) as (config, proxy, store):
        proxy.stalling = False
        settings = load_settings(config)
        log = EventLog(store)
        registry = TenantRegistry("pos", settings.tenants["pos"])
        relays = TenantRelays(registry, log, settings.relay, read_bound=0.5)
        try:
            relays.refresh()
            assert relays.members == ["pos:a"]
            proxy.stalling = True
            with capture_logs() as logs:
                for _ in range(3):  # each refresh ends, warns, and the next reads again
                    refresh = threading.Thread(target=relays.refresh, daemon=True)
                    refresh.start()
                    refresh.join(5)
                    assert not refresh.is_alive(), "the refresh hangs on the stalled registry"
            assert len(_given_up(logs, "pos")) == 3, logs
            for warning in _given_up(logs, "pos"):  # a refresh follows: it says so
                assert "read again" in warning["event"] and warning["retry_in"], warning
            unreadable = [e for e in logs if e["event"].startswith("tenant registry unreadable")]
            assert len(unreadable) == 3 and "no answer" in unreadable[0]["error"], logs
            assert relays.members == ["pos:a"]  # the members known before run on
            assert wait_until(lambda: proxy.live() == 0, 5), proxy.live()
            assert wait_until(lambda: _threads("registry-read-pos") == 0, 5)
            proxy.stalling = False
            relays.read_bound = 10.0  # a fresh connection's set-up may pass 0.5 s under load
            with capture_logs() as logs:
                relays.refresh()
            assert not [e for e in logs if e["log_level"] == "warning"], logs
        finally:
            relays.stop_all()
            registry.close()
            log.close()


def test_relay_once_gives_up_a_stalled_registry_and_relays_the_other_sources(
    pg_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox.registry_reads, "READ_BOUND", 1.0)  # 30 s
    store, pos, a, solo = (pg_database() for _ in range(4))
    init_tenant_outbox(a)
    init_tenant_outbox(solo)
    record_sales(solo, sales_for(1, 2))
    make_registry(pos, {"a": a})
    with stall_proxy(pos, MARKER) as proxy:
        other = {"sources": {"solo": tenant_source(solo, "solo")}}
        config = config_for(tmp_path, store, proxy.url(pos), **other)
        assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
        result: list = []
        started = time.monotonic()
        once = threading.Thread(
            target=lambda: result.append(run_cli(["relay", "--once", "--config", str(config)])),
            daemon=True,
        )
        once.start()
        once.join(20)
        assert result, "relay --once never returns while the registry stalls"
        assert time.monotonic() - started < 15
        (relayed,) = result
        assert relayed.exit_code == 3, relayed.output
        assert "solo: relayed 2" in relayed.output
        assert "pos: tenant registry 'pos': its read gave no answer within 1s" in relayed.output
        (warning,) = [
            line
            for line in relayed.output.splitlines()
            if "tenant registry read gives no answer" in line
        ]
        assert "given up" in warning  # one-shot: no retry follows, none is promised
        assert "read again" not in warning and "retry_in" not in warning, warning
        assert wait_until(lambda: proxy.live() == 0, 5), proxy.live()


def test_relay_once_gives_up_a_stalled_peer_registry_with_the_warning(
    pg_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox.registry_reads, "READ_BOUND", 1.0)  # 30 s
    with stalled_peer(pg_database, tmp_path) as (config, proxy, store):
        relayed = run_cli(["relay", "--once", "--source", "pos", "--config", str(config)])
        assert relayed.exit_code == 3, relayed.output
        (warning,) = [
            line
            for line in relayed.output.splitlines()
            if "tenant registry read gives no answer" in line
        ]
        assert "shop" in warning and "postgresql://" not in warning
        assert "read again" not in warning and "retry_in" not in warning, warning
        waits = "pos:a: tenant registry 'pos', tenant 'a': waits until tenant registry 'shop'"
        assert waits in relayed.output
        assert wait_until(lambda: proxy.live() == 0, 5), proxy.live()


def test_a_read_stalled_in_its_first_connect_is_ended_too(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    # A new engine's first connection is set up (the dialect asks the server its version)
    # before the pool hands it out: a stall there is ended as one mid-query. Each give-up
    # makes a new engine, so each read again runs that setup.
    store, pos = pg_database(), pg_database()
    make_registry(pos, {})
    with stall_proxy(pos, b"version()") as proxy:
        settings = load_settings(config_for(tmp_path, store, proxy.url(pos)))
        registry = TenantRegistry("pos", settings.tenants["pos"])
        try:
            for _ in range(3):
                with pytest.raises(SourceError, match="gave no answer"):
                    read_within(registry, None, 0.5)
            assert wait_until(lambda: proxy.live() == 0, 5), proxy.live()
            assert wait_until(lambda: _threads("registry-read-pos") == 0, 5)
        finally:
            registry.close()
