"""Helpers of the tenant registry tests: the settings file of the point-of-sale service
(``tests/tenant_fixtures.py``) with a tenant registry."""

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
