"""Create (or print) the reference services' tables and outbox tables in their databases."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from config import ConfigError, Settings, SourceSettings
from outbox.db import describe_db_error, engine_kind
from outbox.errors import SourceError
from outbox.sources import open_source
from projections.reference.chat_service import chat_source, init_chat
from projections.reference.events import AUTH, CHAT, ORDERS, PRODUCTS
from projections.reference.services import service_ddl

SERVICE_NAMES = (AUTH, PRODUCTS, ORDERS)


def service_sources(settings: Settings) -> dict[str, SourceSettings]:
    """The configured sources of the three services (named ``auth``, ``products``, ``orders``)."""
    missing = [name for name in SERVICE_NAMES if name not in settings.sources]
    if missing:
        raise ConfigError(
            f"the reference system needs sources named {', '.join(SERVICE_NAMES)}; "
            f"missing: {', '.join(missing)} (see config/examples/reference.toml)"
        )
    return {name: settings.sources[name] for name in SERVICE_NAMES}


def service_statements(name: str, settings: SourceSettings) -> list[str]:
    """The service's tables and indexes, then its outbox (``readmodel outbox init``'s DDL)."""
    source = open_source(name, settings)
    try:
        return service_ddl(name, source.engine.dialect) + source.ddl()
    finally:
        source.close()


def init_services(settings: Settings) -> dict[str, int]:
    """Create whatever is missing in each service database (the chat service's indexes too,
    when the config has one); returns statements run per service."""
    done: dict[str, int] = {}
    for name, source_settings in service_sources(settings).items():
        statements = service_statements(name, source_settings)
        _sqlite_directory(source_settings.url)
        source = open_source(name, source_settings)
        try:
            with source.engine.begin() as conn:
                for statement in statements:
                    conn.exec_driver_sql(statement)
        except SQLAlchemyError as exc:
            raise SourceError(
                f"source {name!r} ({source.display_url}): {describe_db_error(exc)}"
            ) from exc
        finally:
            source.close()
        done[name] = len(statements)
    chat = chat_source(settings)
    if chat is not None:
        done[CHAT] = init_chat(chat)
    return done


def _sqlite_directory(url: str) -> None:
    """A SQLite service database may live in a directory that does not exist yet."""
    if engine_kind(url) == "sqlite":
        database = sa.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
