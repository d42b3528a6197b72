"""The read stores' settings: ``[store]``, which also holds the event log, and the extra
stores of ``[stores.NAME]``."""

from __future__ import annotations

from pydantic import Field, field_validator
from sqlalchemy.engine import make_url

from config.checks import _dsn_checked, _Strict, _url_checked


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
