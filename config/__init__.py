"""readmodel settings: pydantic models, the TOML/environment loader and example files."""

from config.broker_settings import BrokerSettings
from config.cache_settings import CacheSettings
from config.errors import ConfigError
from config.loader import CONFIG_ENV, load_settings
from config.settings import EngineSettings, LoggingSettings, RelaySettings, Settings
from config.source_settings import (
    ColumnMap,
    OutboxTableSettings,
    SourceSettings,
    TenantRegistrySettings,
    TimestampUnit,
)
from config.store_settings import ExtraStoreSettings, StoreSettings

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
    "TimestampUnit",
    "load_settings",
]
