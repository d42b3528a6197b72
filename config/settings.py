"""Typed settings: one TOML file (``--config`` or ``READMODEL_CONFIG``) plus
``READMODEL_...`` environment overrides (nested keys joined by ``__``, e.g.
``READMODEL_STORE__URL``). Unknown keys are errors."""

from __future__ import annotations

import re
from contextvars import ContextVar
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.broker_settings import BrokerSettings
from config.cache_settings import CacheSettings
from config.checks import Duration, DurationOrOff, LogLevel, _Strict, at_least
from config.outbox_identity import shared_outboxes
from config.source_settings import SourceSettings, TenantRegistrySettings, one_member_per_tenant
from config.store_settings import ExtraStoreSettings, StoreSettings

_SOURCE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}(:[A-Za-z0-9_.-]{1,100})?")  # fullmatch


class RelaySettings(_Strict):
    standby_retry: Annotated[
        Duration, at_least("100ms", "a standby would reconnect to the source in a tight loop")
    ] = Field(
        timedelta(seconds=1), description="how often a standby relay tries to take over a source"
    )
    purge_every: Annotated[
        Duration, at_least("1s", "the leader would purge marked rows between every claim")
    ] = Field(timedelta(minutes=5), description="how often marked rows past retention are purged")
    linger: Duration = Field(
        timedelta(milliseconds=5),
        description=(
            "after a batch smaller than batch_size, wait this long before claiming again so a "
            "steady stream is relayed in batches (an isolated event is relayed at once)"
        ),
    )


class EngineSettings(_Strict):
    """How projections are applied."""

    batch_size: int = Field(2000, ge=1, le=100_000, description="events per apply transaction")
    max_attempts: int = Field(5, ge=1, description="handler failures before an event is parked")
    retry_backoff: Duration = Field(
        timedelta(milliseconds=100), description="first retry delay; doubles per attempt"
    )
    handler_timeout: Annotated[
        DurationOrOff, at_least("100ms", "a handler that queries its store would be interrupted")
    ] = Field(
        timedelta(minutes=5),
        description=(
            "how long one event's handler may run: past it its store statement is cancelled "
            "and the handler interrupted, and the event fails as if the handler had raised "
            "(retried, parked after max_attempts), so a hung handler does not hold its lane "
            'for ever; "off" for no bound'
        ),
    )
    stuck_exit_after: Annotated[
        DurationOrOff,
        at_least("2s", "a handler would not be given its second to be interrupted in-process"),
    ] = Field(
        timedelta(minutes=2),
        description=(
            "how long past handler_timeout a handler that cannot be interrupted (blocked "
            "outside Python, e.g. a socket read without a timeout) may stay stuck before the "
            "worker process exits with code 4 to be restarted by its supervisor (its messages "
            'go back to the queue); "off": it holds its lane until it returns'
        ),
    )
    sweep_every: Duration = Field(
        timedelta(seconds=5), description="how often the sweeper re-triggers lagging lanes"
    )


class HealthSettings(_Strict):
    """Bounds for ``readmodel health``; a lag past a bound makes the probe fail."""

    max_lag_events: int | None = Field(
        None, ge=0, description="projection lag (log head - checkpoint) or undelivered outbox rows"
    )
    max_lag_seconds: DurationOrOff = Field(
        timedelta(minutes=5),
        description='age of the oldest unapplied log event or undelivered outbox row ("off": '
        "no bound)",
    )
    max_parked: int | None = Field(
        None,
        ge=0,
        description="events parked by a projection, or malformed rows parked from a source's "
        "outbox (no bound unless set)",
    )
    max_overdue: int | None = Field(
        None,
        ge=0,
        description="handlers of a projection running past engine.handler_timeout now (stuck "
        "where they cannot be interrupted; known on a Redis broker only; no bound unless set)",
    )


class MetricsSettings(_Strict):
    """Prometheus: ``readmodel metrics`` serves what every readmodel process records."""

    dir: str = Field(
        "",
        description="prometheus_client multiprocess directory shared by relay, workers and the "
        "metrics server ('' = only figures computed at scrape time)",
    )
    host: str = "0.0.0.0"
    port: int = Field(9464, ge=1, le=65535)


class ShutdownSettings(_Strict):
    grace: Duration = Field(
        timedelta(seconds=10),
        description="after SIGTERM: time to finish the batch in hand before exiting anyway",
    )


class LoggingSettings(_Strict):
    level: LogLevel = "info"
    json_output: bool = Field(False, alias="json")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Settings(BaseSettings):
    """All of readmodel's settings. Build with :func:`config.load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="READMODEL_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    store: StoreSettings = StoreSettings()
    stores: dict[str, ExtraStoreSettings] = Field(
        default_factory=dict,
        description="extra read-model stores by name (a projection's `store`); 'default' is "
        "[store], which also holds the event log",
    )

    @field_validator("stores")
    @classmethod
    def _no_second_default(
        cls, value: dict[str, ExtraStoreSettings]
    ) -> dict[str, ExtraStoreSettings]:
        if "default" in value:
            raise ValueError("the store named 'default' is [store]: give this one another name")
        return value

    projections: list[str] = Field(
        default_factory=list, description="modules (or module:Class) holding projections"
    )
    broker: BrokerSettings = BrokerSettings()
    engine: EngineSettings = EngineSettings()
    cache: CacheSettings = CacheSettings()
    relay: RelaySettings = RelaySettings()
    logging: LoggingSettings = LoggingSettings()
    health: HealthSettings = HealthSettings()
    metrics: MetricsSettings = MetricsSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    sources: dict[str, SourceSettings] = Field(default_factory=dict)
    tenants: dict[str, TenantRegistrySettings] = Field(
        default_factory=dict,
        description="tenant registries by source group name: each row a member source",
    )
    _config_file: str | None = PrivateAttr(None)
    _env_keys: frozenset[str] = PrivateAttr(frozenset())

    @property
    def store_urls(self) -> dict[str, str]:
        """``{store name: URL}`` of every read store, ``default`` being ``[store]``."""
        return {"default": self.store.url, **{n: s.url for n, s in self.stores.items()}}

    def store_label(self, name: str) -> str | None:
        """How messages name the store ``name`` (``default``: ``[store]``), so that with
        several configured each line says which; ``None`` when ``[store]`` is the only one."""
        return name if len(self.store_urls) > 1 else None

    @property
    def config_file(self) -> str | None:
        """The TOML file these settings were read from (``None``: defaults and environment)."""
        return self._config_file

    def variable_for(self, *key: str) -> str | None:
        """The ``READMODEL_...`` variable that set the key at path ``key`` (``"sources",
        "auth", "binary_ids"``) over the file, for a message to name instead of the file;
        ``None`` when no variable did."""
        name = "__".join(key).lower().replace(":", "_")  # as a variable spells a member
        return f"READMODEL_{name.upper()}" if name in self._env_keys else None

    @field_validator("sources")
    @classmethod
    def _names(cls, value: dict[str, SourceSettings]) -> dict[str, SourceSettings]:
        for name in value:
            if not _SOURCE_NAME.fullmatch(name):
                raise ValueError(
                    f"source name {name!r}: use letters, digits, '.', '_' or '-' (a member "
                    f'of a source group: group:member, e.g. "pos:acme")'
                )
        groups = {name.partition(":")[0] for name in value if ":" in name}
        if "event" in groups:
            raise ValueError(
                "source group 'event': the name is taken by consistency tokens (event:ID)"
            )
        clash = sorted(groups & set(value))
        if clash:
            raise ValueError(
                f"source {clash[0]!r} has the name of a source group ({clash[0]}:...): a "
                f"projection subscribed to {clash[0]!r} would read both; rename one"
            )
        spelled: dict[str, str] = {}
        for name in value:  # a variable cannot spell ':' or tell case: two names, one variable
            variable = f"READMODEL_SOURCES__{name.upper().replace(':', '_')}__..."
            if variable in spelled:
                raise ValueError(
                    f"sources {spelled[variable]!r} and {name!r} are both spelled {variable} "
                    f"in environment variables (':' is written '_', case is not told "
                    f"apart): rename one"
                )
            spelled[variable] = name
        value = {name: _as_member(name, source) for name, source in value.items()}
        one_member_per_tenant(value)
        for names in shared_outboxes(value):
            raise ValueError(
                f"sources {' and '.join(repr(n) for n in names)} read the same database and "
                f"outbox table: their rows would be mixed (whichever relays first takes them); "
                f"give each its own outbox, or keep one source"
            )
        return value

    @field_validator("tenants")
    @classmethod
    def _registry_names(
        cls, value: dict[str, TenantRegistrySettings], info: ValidationInfo
    ) -> dict[str, TenantRegistrySettings]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name):
                raise ValueError(f"group name {name!r}: use letters, digits, '.', '_' or '-'")
            if name == "event":
                raise ValueError(
                    "group 'event': the name is taken by consistency tokens (event:ID)"
                )
        for source in info.data.get("sources", {}):
            group = source.partition(":")[0]
            if group in value:
                raise ValueError(
                    f"[tenants.{group}] lists the members of group {group!r}, and "
                    f'[sources."{source}"] is one too: add the tenant to the registry instead'
                )
        return value

    external_sources: list[str] = Field(
        default_factory=list,
        description="sources (or groups) another deployment relays into this event log: "
        "projections may subscribe to them before the log has events of them",
    )

    @field_validator("external_sources")
    @classmethod
    def _external_names(cls, value: list[str], info: ValidationInfo) -> list[str]:
        configured = {*info.data.get("sources", {}), *info.data.get("tenants", {})}
        for name in value:
            if not _SOURCE_NAME.fullmatch(name):
                raise ValueError(
                    f"source name {name!r}: use letters, digits, '.', '_' or '-' (a member "
                    f'of a source group: group:member, e.g. "pos:acme")'
                )
            if name.partition(":")[0] == "event":
                raise ValueError(
                    f"source {name!r}: the name 'event' is taken by consistency tokens (event:ID)"
                )
            if name in configured:
                where = "[tenants.*]" if name in info.data.get("tenants", {}) else "[sources.*]"
                raise ValueError(
                    f"{name!r} is configured in {where} (relayed here) and listed as relayed "
                    f"elsewhere: keep one"
                )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: explicit arguments, then environment, then the TOML file."""
        return (
            init_settings,
            _NamesAsInFile(settings_cls, env_settings),
            _FileSource(settings_cls),
        )


_file_data: ContextVar[dict[str, Any]] = ContextVar("readmodel_config_file")


def _as_member(name: str, source: SourceSettings) -> SourceSettings:
    """A group member (``pos:acme``) is one tenant's database, as a registry's members are:
    every row is its ``tenant`` (the member's name when not set), whatever a column says,
    so a row claiming another tenant cannot reach that tenant's read models. A member that
    names a tenant column is refused."""
    group, sep, member = name.partition(":")
    if not sep:
        return source
    if "tenant" in source.columns.model_fields_set and source.columns.tenant:
        raise ValueError(
            f"source {name!r} is a member of group {group!r}, a database per tenant: every "
            f"row belongs to tenant {source.tenant or member!r}; remove columns.tenant "
            f'({source.columns.tenant!r}) or set it to "" (a database holding many '
            f"tenants' rows is a source outside any group)"
        )
    columns = source.columns.model_copy(update={"tenant": ""})
    return source.model_copy(update={"columns": columns, "tenant": source.tenant or member})


class _NamesAsInFile(PydanticBaseSettingsSource):
    """The environment, with source and store names spelled as in the file: variable names
    are case-insensitive, so ``READMODEL_SOURCES__POS_A__URL`` reads as ``pos_a`` and
    would add a source beside the file's ``POS_A`` instead of overriding its URL."""

    def __init__(self, settings_cls: type[BaseSettings], env: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._env = env

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._env.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = dict(self._env())
        file_data = _file_data.get({})
        for section in ("sources", "stores", "tenants"):
            named = data.get(section)
            in_file = file_data.get(section)
            if isinstance(named, dict) and isinstance(in_file, dict):
                # A variable name cannot hold ':': READMODEL_SOURCES__POS_ACME__URL is pos:acme.
                spelled = {str(name).lower().replace(":", "_"): name for name in in_file}
                spelled.update({str(name).lower(): name for name in in_file})
                data[section] = {spelled.get(name.lower(), name): v for name, v in named.items()}
        return data


class _FileSource(PydanticBaseSettingsSource):
    """The already-parsed TOML file (see :func:`config.load_settings`)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _file_data.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get({}))
