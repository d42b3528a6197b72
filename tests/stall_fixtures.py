"""Tenant registries read through a :class:`tests.stall_proxy_helpers.StallProxy`: the set-ups
of the tests of stalled registry reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cli_helpers import run_cli
from tests.stall_proxy_helpers import StallProxy, stall_proxy
from tests.tenant_fixtures import REGISTRY_QUERY, init_tenant_outbox, make_registry
from tests.tenant_helpers import config_for, registries_config

MARKER = REGISTRY_QUERY.split(" WHERE")[0].encode()  # the registry's query, not the setup


@contextmanager
def stalled_registry(
    pg_database: Callable[[], str], tmp_path: Path
) -> Iterator[tuple[Path, StallProxy, str]]:
    """Registry ``pos`` listing tenant ``a``, read through a proxy that stalls its query: the
    config (migrated) of a read store beside them, the proxy, the store's DSN."""
    store, pos, a = (pg_database() for _ in range(3))
    init_tenant_outbox(a)
    make_registry(pos, {"a": a})
    with stall_proxy(pos, MARKER) as proxy:
        config = config_for(tmp_path, store, proxy.url(pos))
        assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
        yield config, proxy, store


@contextmanager
def stalled_peer(
    pg_database: Callable[[], str], tmp_path: Path
) -> Iterator[tuple[Path, StallProxy, str]]:
    """Registry ``pos`` listing tenant ``a`` beside an empty registry ``shop`` read through a
    proxy that stalls its query: the config (migrated) of a read store beside them, the
    proxy, the store's DSN."""
    store, pos, shop, a = (pg_database() for _ in range(4))
    init_tenant_outbox(a)
    make_registry(pos, {"a": a})
    make_registry(shop, {})
    with stall_proxy(shop, MARKER) as proxy:
        config = registries_config(tmp_path, store, {"pos": pos, "shop": proxy.url(shop)})
        assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
        yield config, proxy, store
