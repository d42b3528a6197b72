"""Typed settings: one TOML file (``--config`` or ``READMODEL_CONFIG``) plus
``READMODEL_...`` environment overrides (nested keys joined by ``__``, e.g.
``READMODEL_STORE__URL``). Unknown keys are errors."""

from __future__ import annotations

import re
from contextvars import ContextVar
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url

from config.outbox_identity import shared_outboxes
from config.secrets import reveal

_SOURCE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}(:[A-Za-z0-9_.-]{1,100})?")  # fullmatch
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")  # fullmatch: "$" took "x\n"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> Any:
    """Accept ``90``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` or ``"250ms"``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("expected a duration such as 30s, 15m, 12h or 7d")
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    if isinstance(value, bool) or (isinstance(value, int | float) and value < 0):
        raise ValueError("expected a duration such as 30s, 15m, 12h or 7d (seconds if a number)")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def check_identifier(value: str) -> str:
    """A SQL identifier from config: letters, digits, ``_``, ``$``. Quoted later, never pasted."""
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid SQL identifier "
            "(letters, digits and _ only, starting with a letter or _, at most 63 characters)"
        )
    return value


def _dsn_checked(value: str, schemes: set[str], expected: str) -> str:
    """``value`` (decrypted when written ``fernet:...``, see :mod:`config.secrets`) with its
    scheme in lower case, refused (without echoing it: it may hold a password) unless
    SQLAlchemy can read it: scheme, driver, port."""
    value = reveal(value)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() not in schemes:
        raise ValueError(f"expected a DSN starting with {expected}")
    value = f"{scheme.lower()}://{rest}"
    _authority_checked(value)
    try:  # postgres:// (Heroku's DATABASE_URL) is readmodel's, not a SQLAlchemy dialect name
        url = make_url(re.sub(r"^postgres(?=[+:])", "postgresql", value))
        port = url.port
        url.get_dialect()
    except ValueError:
        raise ValueError("the port is not a number") from None
    except Exception:
        raise ValueError(
            f"not a DSN readmodel can read (the driver after '+' is unknown, or the host or "
            f"escaping is wrong); expected {expected}"
        ) from None
    if port is not None and not 0 < port < 65536:
        raise ValueError("the port is out of range")
    return value


def _url_checked(value: str, schemes: set[str], expected: str) -> str:
    """A MongoDB URL (:func:`_mongo_url_checked`) or a DSN of ``schemes``."""
    if reveal(value).lower().startswith(("mongodb://", "mongodb+srv://")):
        return _mongo_url_checked(value)
    return _dsn_checked(value, schemes, expected)


def _mongo_url_checked(value: str) -> str:
    """A MongoDB URL (decrypted), scheme in lower case, that names its database and that the
    driver can read (hosts, ports, options; a ``+srv`` URL is not looked up here)."""
    from urllib.parse import unquote

    from pymongo.errors import PyMongoError
    from pymongo.uri_parser import parse_uri

    value = reveal(value)
    scheme, _, rest = value.partition("://")
    scheme = scheme.lower()
    value = f"{scheme}://{rest}"
    _authority_checked(value)
    authority, slash, path = rest.partition("/")
    database = unquote(path.split("?", 1)[0])
    hosts = authority.rpartition("@")[2]
    if not hosts:
        raise ValueError("the MongoDB URL names no host: mongodb://host:27017/<database>")
    if not slash or not database:
        raise ValueError("the MongoDB URL names no database: mongodb://host:27017/<database>")
    if any(c in database for c in '/\\. "$') or len(database) > 63:
        raise ValueError(f"{database!r} is not a valid MongoDB database name")
    if scheme == "mongodb+srv":
        if "," in hosts or ":" in hosts:
            raise ValueError("a mongodb+srv:// URL names one host name, without a port")
        return value
    try:
        parse_uri(value)
    except (PyMongoError, ValueError) as exc:
        reason = str(exc).split(", full error")[0]
        secret = authority.rpartition("@")[0].partition(":")[2]
        if secret:
            reason = reason.replace(secret, "***")
        raise ValueError(f"not a MongoDB URL the driver can read: {reason}") from None
    return value


def _authority_checked(value: str) -> str:
    """``value``, refused when its user or password has an unescaped ``@``, ``/`` or space:
    the DSN would be read with part of the password as the host or the path, and masking
    (which finds the password between ``:`` and ``@``) would show it."""
    rest = value.split("://", 1)[1] if "://" in value else ""
    authority = rest.split("/", 1)[0]
    if authority.count("@") > 1:
        raise ValueError("the user or password contains '@': write it as %40")
    sqlite = value.lower().startswith("sqlite")  # a path, which may hold any character
    if not sqlite and "@" not in authority and "@" in rest.split("?", 1)[0]:
        raise ValueError("the user or password contains '/': write it as %2F")
    if any(c.isspace() for c in authority.rpartition("@")[0]):
        raise ValueError("the user or password contains a space: write it as %20")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnMap(_Strict):
    """Outbox column names. Defaults follow Debezium's outbox convention plus ``seq``.

    Set an optional column to ``""`` when the table does not have it.
    """

    position: str = Field(
        "seq", description="monotonic ordering column (bigserial / auto_increment)"
    )
    event_id: str = Field("id", description="unique event id (UUID); '' to derive it from position")
    aggregate_type: str = "aggregatetype"
    aggregate_id: str = "aggregateid"
    event_type: str = "type"
    payload: str = "payload"
    occurred_at: str = "timestamp"
    tenant: str = "tenant_id"
    headers: str = "headers"
    dispatched_at: str = Field("dispatched_at", description="used when on_dispatch = 'mark'")

    @field_validator("*")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return value if value == "" else check_identifier(value)

    @model_validator(mode="after")
    def _required(self) -> ColumnMap:
        for name in ("position", "aggregate_type", "aggregate_id", "event_type", "payload"):
            if not getattr(self, name):
                raise ValueError(f"columns.{name} is required")
        return self


class OutboxTableSettings(_Strict):
    """A service database's outbox table: every key of a source but its ``url`` and
    ``tenant`` (``[tenants.NAME.source]``, shared by a registry's member sources)."""

    table: str = Field("outbox", description="the outbox table (MongoDB: collection)")
    schema_name: str | None = Field(
        None, alias="schema", description="database schema of the table"
    )
    columns: ColumnMap = ColumnMap()
    on_dispatch: Literal["delete", "mark"] = "delete"
    retention: Duration = Field(timedelta(days=7), description="how long marked rows are kept")
    batch_size: int = Field(2000, ge=1, le=50_000)
    max_payload_bytes: int = Field(1_048_576, ge=1)
    binary_ids: Literal["text", "uuid", "uuid-swapped", "hex"] = Field(
        "text",
        description="how binary event and aggregate id columns become text: 'text' (the "
        "default) reads them as UTF-8; 'uuid' reads them as 16-byte UUIDs (BIN_TO_UUID(x)), "
        "'uuid-swapped' as MySQL's time-swapped UUIDs (UUID_TO_BIN(u, 1), read as "
        "BIN_TO_UUID(x, 1)), 'hex' as lowercase hex. Text id columns are read as they are. "
        "Changing it on a source whose log holds events re-keys their aggregates",
    )
    poll_min: Duration = Field(timedelta(milliseconds=5), description="poll interval when busy")
    poll_max: Duration = Field(timedelta(seconds=1), description="poll interval when idle")
    notify: bool = Field(
        True,
        description="wake up on PostgreSQL's NOTIFY from the outbox trigger, or on a MongoDB "
        "change stream (replica sets)",
    )
    lease: Duration = Field(
        timedelta(seconds=10),
        description="MongoDB: a standby relay takes the source over when the leader has not "
        "renewed its lease for this long",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return check_identifier(value)

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value)

    @model_validator(mode="after")
    def _mark_needs_column(self) -> OutboxTableSettings:
        if self.on_dispatch == "mark" and not self.columns.dispatched_at:
            raise ValueError("on_dispatch = 'mark' needs columns.dispatched_at")
        if self.poll_max < self.poll_min:
            raise ValueError("poll_max must not be shorter than poll_min")
        return self


class SourceSettings(OutboxTableSettings):
    """One service database and its outbox table."""

    url: str = Field(
        description="SQLAlchemy-style DSN: postgresql://, mysql://, mariadb://, sqlite:///; "
        "or a MongoDB URL naming the database: mongodb://host:27017/chat"
    )
    tenant: str | None = Field(
        None,
        description="tenant of rows whose tenant column is empty; of every row when "
        "columns.tenant = '' (a database per tenant)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _url_checked(
            value,
            {"postgresql", "postgres", "mysql", "mariadb", "sqlite"},
            "postgresql://, mysql://, mariadb://, sqlite:/// or mongodb://",
        )

    @property
    def is_mongodb(self) -> bool:
        return self.url.startswith(("mongodb://", "mongodb+srv://"))

    @model_validator(mode="after")
    def _mongodb_checks(self) -> SourceSettings:
        if self.is_mongodb and self.lease < timedelta(milliseconds=300):
            raise ValueError("lease must be at least 300ms")
        if self.is_mongodb and self.schema_name is not None:
            raise ValueError("schema does not apply to MongoDB: the URL names the database")
        if self.is_mongodb and self.binary_ids != "text":
            raise ValueError(
                "binary_ids does not apply to MongoDB: BSON UUIDs (subtypes 3 and 4) are read "
                "as UUID text, other binary as UTF-8"
            )
        return self


class TenantRegistrySettings(_Strict):
    """``[tenants.NAME]``: a master database listing the tenant databases of the source
    group NAME; each row becomes the member source ``NAME:<tenant id>``."""

    url: str = Field(
        description="the registry database: postgresql://, mysql://, mariadb:// or sqlite:///"
    )
    query: str = Field(
        "SELECT tenant_id, dsn FROM tenants",
        description="a SELECT giving each tenant's id and its database's DSN (which may be "
        "fernet:...), in that order",
    )
    refresh: Duration = Field(
        timedelta(seconds=30), description="how often the relay reads the registry again"
    )
    source: OutboxTableSettings = Field(
        OutboxTableSettings(),
        description="the outbox table of every tenant database (the keys of a source but url "
        "and tenant)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _dsn_checked(
            value,
            {"postgresql", "postgres", "mysql", "mariadb", "sqlite"},
            "postgresql://, mysql://, mariadb:// or sqlite:///",
        )

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        if not value.lstrip().lower().startswith(("select", "with")):
            raise ValueError("expected a SELECT of two columns: tenant id, DSN")
        return value

    @field_validator("refresh")
    @classmethod
    def _refresh(cls, value: timedelta) -> timedelta:
        if value < timedelta(milliseconds=100):
            raise ValueError("refresh must be at least 100ms")
        return value


class StoreSettings(_Strict):
    """The read store: holds the event log, checkpoints, parked events and read models."""

    url: str = Field("sqlite:///readmodel.db", description="postgresql:// or sqlite:///")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _dsn_checked(
            value, {"postgresql", "postgres", "sqlite"}, "postgresql:// or sqlite:///"
        )


class ExtraStoreSettings(_Strict):
    """A read-model store besides ``[store]``: PostgreSQL, SQLite or MongoDB (documents)."""

    url: str = Field(
        description="postgresql://, sqlite:/// or a MongoDB URL naming the database "
        "(mongodb://host:27017/readmodels, a replica set: its transactions are used)"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _url_checked(
            value, {"postgresql", "postgres", "sqlite"}, "postgresql://, sqlite:/// or mongodb://"
        )


class RelaySettings(_Strict):
    standby_retry: Duration = Field(
        timedelta(seconds=1), description="how often a standby relay tries to take over a source"
    )
    purge_every: Duration = Field(
        timedelta(minutes=5), description="how often marked rows past retention are purged"
    )
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
        return _authority_checked(value)

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
        return _authority_checked(value)

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("a non-empty prefix without spaces, such as 'readmodel:cache:'")
        return value


class LoggingSettings(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
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
