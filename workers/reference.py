"""Wiring for the reference system's ``verify``: engines from settings, and whether the
pipeline had caught up (a projection still behind shows its lag as mismatches)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from config import ConfigError, Settings
from outbox.db import create_engine
from outbox.mongo_connection import mongo_client, mongo_database
from outbox.status import source_statuses
from projections.mongo_store import MongoStore
from projections.reference.chat_service import NO_CHAT, chat_source
from projections.reference.chat_verify import chat_checks
from projections.reference.events import CHAT
from projections.reference.provision import service_sources
from projections.reference.verify import CHECKS, Check, VerifyReport, verify
from projections.sql_store import SqlStore
from workers.runtime import build_runtime

CONVERSATION_INBOX = "conversation_inbox"


def run_verify(settings: Settings, *, keep: int = 100) -> tuple[VerifyReport, str]:
    """Verify every configured reference projection; returns the report and, when the
    pipeline trails the services, a sentence saying by how much (else ``""``)."""
    sources = service_sources(settings)
    chat = chat_source(settings)
    runtime = build_runtime(settings, create_tables=False, migrate=False)
    services: dict[str, sa.Engine] = {}
    chat_client: Any = None
    try:
        names = [name for name in runtime.engine.projections if name in CHECKS]
        inbox = CONVERSATION_INBOX in runtime.engine.projections
        if not names and not inbox:
            raise ConfigError(
                "no reference projection is configured: add the modules of "
                "projections.reference.PROJECTION_MODULES to 'projections'"
            )
        stores: dict[str, sa.Engine] = {}
        for name in names:
            store = runtime.engine.store_of(name)
            if not isinstance(store, SqlStore):
                raise ConfigError(f"projection {name!r}: verify reads SQL stores only")
            stores[name] = store.engine
        services = {name: create_engine(s.url) for name, s in sources.items()}
        more: list[Check] = []
        notes: list[str] = []
        if chat is None:
            notes.append(NO_CHAT)
        elif not inbox:
            notes.append(f"chat: skipped, {CONVERSATION_INBOX!r} is not among the projections")
        else:
            docs = runtime.engine.store_of(CONVERSATION_INBOX)
            if not isinstance(docs, MongoStore):
                raise ConfigError(f"projection {CONVERSATION_INBOX!r}: its store must be MongoDB")
            chat_client = mongo_client(chat.url)
            chat_db = chat_client.get_database(mongo_database(chat.url))
            more = chat_checks(chat_db, services["auth"], docs.database)
            names.append(CONVERSATION_INBOX)
        report = verify(services, stores, keep=keep, more=more)
        report.notes.extend(notes)
        watched = {*sources, CHAT} if more else set(sources)
        pending = sum(
            s.undelivered or 0
            for s in source_statuses(settings, runtime.log)
            if s.source in watched
        )
        lagging = runtime.engine.lagging(names)
        behind = ""
        if pending or lagging:
            behind = (
                f"the read models trail the services ({pending} outbox rows not relayed, "
                f"{len(lagging)} projection lanes behind the log): mismatches may be events "
                "not applied yet"
            )
        return report, behind
    finally:
        for engine in services.values():
            engine.dispose()
        if chat_client is not None:
            chat_client.close()
        runtime.close()
