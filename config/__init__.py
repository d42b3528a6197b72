"""readmodel settings: pydantic models, the TOML/environment loader and example files."""

from config.errors import ConfigError
from config.loader import CONFIG_ENV, load_settings
from config.settings import (
    BrokerSettings,
    CacheSettings,
    ColumnMap,
    EngineSettings,
    ExtraStoreSettings,
    LoggingSettings,
    OutboxTableSettings,
    RelaySettings,
    Settings,
    SourceSettings,
    StoreSettings,
    TenantRegistrySettings,
)

__all__ = [
    "BrokerSettings",
    "CacheSettings",
    "CONFIG_ENV",
    "ColumnMap",
    "EngineSettings",
    "ConfigError",
    "LoggingSettings",
    "OutboxTableSettings",
    "RelaySettings",
    "Settings",
    "SourceSettings",
    "ExtraStoreSettings",
    "StoreSettings",
    "TenantRegistrySettings",
    "load_settings",
]
