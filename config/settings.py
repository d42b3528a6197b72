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
from sqlalchemy.engine import make_url

from config.checks import (
    Duration,
    LogLevel,
    _authority_checked,
    _client_url_checked,
    _dsn_checked,
    _Strict,
    _url_checked,
    at_least,
)
from config.outbox_identity import shared_outboxes
from config.secrets import reveal
from config.source_settings import ColumnMap as ColumnMap  # re-exported
from config.source_settings import OutboxTableSettings as OutboxTableSettings  # re-exported
from config.source_settings import SourceSettings, TenantRegistrySettings

_SOURCE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}(:[A-Za-z0-9_.-]{1,100})?")  # fullmatch


class StoreSettings(_Strict):
    """The read store: holds the event log, checkpoints, parked events and read models."""

    url: str = Field("sqlite:///readmodel.db", description="postgresql:// or sqlite:///")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _on_disk(
            _dsn_checked(value, {"postgresql", "postgres", "sqlite"}, "postgresql:// or sqlite:///")
        )


def _on_disk(value: str) -> str:
    """``value``, refused when it is an in-memory SQLite database: it keeps nothing once its
    process ends (``migrate`` would migrate it for nothing), nor between threads."""
    if value.lower().startswith("sqlite"):
        database = make_url(value).database or ""
        if database in ("", ":memory:") or "mode=memory" in value:
            raise ValueError(
                "an in-memory SQLite database keeps nothing once its process ends (migrate, "
                "relay and workers are processes of their own): give a file, such as "
                "sqlite:///readmodel.db"
            )
    return value


class ExtraStoreSettings(_Strict):
    """A read-model store besides ``[store]``: PostgreSQL, SQLite or MongoDB (documents)."""

    url: str = Field(
        description="postgresql://, sqlite:/// or a MongoDB URL naming the database "
        "(mongodb://host:27017/readmodels, a replica set: its transactions are used)"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _on_disk(
            _url_checked(
                value,
                {"postgresql", "postgres", "sqlite"},
                "postgresql://, sqlite:/// or mongodb://",
            )
        )


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


class BrokerSettings(_Strict):
    """Where projection work is queued: Redis (default for servers), RabbitMQ, or in-process."""

    url: str = Field(
        "memory://",
        description="memory:// (in-process, embedded), redis://host:6379/0 or amqp://user:pw@host/",
    )
    queue: str = Field("readmodel", description="Dramatiq queue name")
    namespace: str = Field(
        "dramatiq",
        description=(
            "Redis only: the prefix of Dramatiq's keys (queues, heartbeats), to keep readmodel "
            "apart from other Dramatiq apps on the same Redis database"
        ),
    )
    worker_timeout: Duration = Field(
        timedelta(milliseconds=100),
        description=(
            "how long an idle worker waits before polling again; on Redis an enqueue wakes "
            "it at once, so this only bounds the delay of a lost wake-up"
        ),
    )
    middleware: list[str] = Field(
        default_factory=list,
        description="extra Dramatiq middleware classes, as 'module:Class'",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = reveal(value)
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in {"memory", "redis", "rediss", "amqp", "amqps"}:
            raise ValueError("expected memory://, redis://, rediss://, amqp:// or amqps://")
        return _client_url_checked(_authority_checked(value))

    @field_validator("queue", "namespace")
    @classmethod
    def _queue(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value):
            raise ValueError("use letters, digits, '.', '_' or '-'")
        return value


class EngineSettings(_Strict):
    """How projections are applied."""

    batch_size: int = Field(2000, ge=1, le=100_000, description="events per apply transaction")
    max_attempts: int = Field(5, ge=1, description="handler failures before an event is parked")
    retry_backoff: Duration = Field(
        timedelta(milliseconds=100), description="first retry delay; doubles per attempt"
    )
    sweep_every: Duration = Field(
        timedelta(seconds=5), description="how often the sweeper re-triggers lagging lanes"
    )


class HealthSettings(_Strict):
    """Bounds for ``readmodel health``; a lag past a bound makes the probe fail."""

    max_lag_events: int | None = Field(
        None, ge=0, description="projection lag (log head - checkpoint) or undelivered outbox rows"
    )
    max_lag_seconds: Duration | None = Field(
        timedelta(minutes=5),
        description="age of the oldest unapplied log event or undelivered outbox row",
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


class CacheSettings(_Strict):
    """The query cache: cache-aside reads, invalidated by tag from every applied batch."""

    url: str = Field(
        "",
        description="'' (no cache), memory:// (in-process, one process only) or "
        "redis://host:6379/1 (shared by every process)",
    )
    key_prefix: str = Field(
        "readmodel:cache:", description="every Redis key of the cache starts with this"
    )
    ttl: Duration = Field(timedelta(minutes=5), description="how long an entry lives at most")
    ttl_jitter: float = Field(
        0.1, ge=0, lt=1, description="each entry lives ttl * (1 +/- ttl_jitter), at random"
    )
    single_flight_wait: Duration = Field(
        timedelta(milliseconds=200),
        description="how long a reader waits for another reader loading the same key "
        "before it loads the key itself",
    )
    lock_lease: Duration = Field(
        timedelta(seconds=5),
        description="Redis: how long a loader's single-flight lock lasts if its process dies",
    )
    near_cache_size: int = Field(
        10_000,
        ge=0,
        description="Redis: entries kept in process memory, kept coherent by Redis client "
        "tracking (0 = off); memory://: the cache's size",
    )
    version_ttl: Duration = Field(
        timedelta(minutes=10),
        description="Redis: how long a tag remembers its last invalidation; a load that takes "
        "longer than half of this is served but not cached",
    )
    connect_timeout: Duration = Field(
        timedelta(milliseconds=250), description="Redis: connect and read timeout"
    )
    retry_after: Duration = Field(
        timedelta(seconds=1),
        description="Redis: after a failure, queries read the read model directly this long "
        "before trying Redis again",
    )
    redo_after: Duration = Field(
        timedelta(seconds=2),
        description="the sweeper redoes recorded invalidations older than this "
        "(a worker redoes all of them when it starts)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = reveal(value)
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if value and scheme not in {"memory", "redis", "rediss", "unix"}:
            raise ValueError("expected '', memory://, redis://, rediss:// or unix://")
        return _client_url_checked(_authority_checked(value))

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("a non-empty prefix without spaces, such as 'readmodel:cache:'")
        return value


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
