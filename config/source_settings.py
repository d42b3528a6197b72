"""Settings of the service databases: a source's outbox table and its columns
(``[sources.NAME]``), and a tenant registry listing the tenant databases of a source group
(``[tenants.NAME]``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from config.checks import (
    Duration,
    _dsn_checked,
    _Strict,
    _url_checked,
    at_least,
    check_identifier,
)

TimestampUnit = Literal["auto", "s", "ms", "us", "ns"]
"""The unit of a numeric timestamp column's Unix epochs (``"auto"``: told by magnitude)."""


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
    timestamp_unit: TimestampUnit = Field(
        "auto",
        description="the unit of a numeric timestamp column's Unix epochs: 's', 'ms', 'us' or "
        "'ns'; 'auto' (the default) tells it by magnitude: up to 1e11 seconds, up to 1e14 "
        "milliseconds, up to 1e17 microseconds, nanoseconds above (each read right from "
        "1973-03-03 on; set the unit for earlier dates)",
    )
    poll_min: Duration = Field(timedelta(milliseconds=5), description="poll interval when busy")
    poll_max: Annotated[
        Duration, at_least("10ms", "an idle relay would claim in a tight loop (poll_min may be 0)")
    ] = Field(timedelta(seconds=1), description="poll interval when idle")
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


def one_member_per_tenant(sources: dict[str, SourceSettings]) -> None:
    """Two members of one group relaying as one tenant (``tenant = "acme"`` copied into
    ``pos:globex``'s table) would give globex's rows to acme's reads: refused."""
    seen: dict[tuple[str, str | None], str] = {}
    for name, source in sources.items():
        group, sep, _ = name.partition(":")
        if not sep:
            continue
        other = seen.setdefault((group, source.tenant), name)
        if other != name:
            raise ValueError(
                f"sources {other!r} and {name!r} are both tenant {source.tenant!r} of group "
                f"{group!r}: each member is one tenant's database; fix the tenant of one"
            )
