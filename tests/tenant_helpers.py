"""Helpers of the tenant registry tests: the settings file of the point-of-sale service
(``tests/tenant_fixtures.py``) with one tenant registry, or with several."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import write_config
from tests.tenant_fixtures import REGISTRY_QUERY


def config_for(tmp_path: Path, store: str, registry: str, **other: object) -> Path:
    return write_config(
        tmp_path / "pos.toml",
        {
            "store": {"url": store},
            "projections": ["tests.tenant_fixtures"],
            "engine": {"sweep_every": "200ms"},
            "tenants": {
                "pos": {
                    "url": registry,
                    "query": REGISTRY_QUERY,
                    "refresh": "200ms",
                    "source": {"poll_max": "100ms", "batch_size": 50},
                }
            },
            **other,
        },
    )


def registries_config(
    tmp_path: Path, store: str, registries: dict[str, str], refresh: str = "200ms"
) -> Path:
    """The settings file with one ``[tenants.GROUP]`` registry per ``registries`` entry."""
    return write_config(
        tmp_path / "pos.toml",
        {
            "store": {"url": store},
            "projections": ["tests.tenant_fixtures"],
            "tenants": {
                group: {
                    "url": url,
                    "query": REGISTRY_QUERY,
                    "refresh": refresh,
                    "source": {"poll_max": "100ms", "batch_size": 50},
                }
                for group, url in registries.items()
            },
        },
    )
