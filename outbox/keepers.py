"""Which of the members reading one outbox keeps it, by what the event log has of each.

A member the log has events of keeps it over one it has none of; among members it has
events of all (a split history), the one appended for most recently, the one relaying
(``rm_log_heads.updated_at``, which appends alone set). Used within one tenant registry
(``outbox.tenant_registry``) and across registries (``outbox.registry_overlaps``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import create_engine, describe_db_error
from outbox.errors import SourceError
from outbox.schema import log_heads

Appends = Mapping[str, datetime | None]
"""``{source: when the log last appended for it}``, for sources the log has events of."""


class EventLogUnreadable(SourceError):
    """The event log could not be read to check the registries' shared databases: the
    registry's members wait, as for an unreadable registry."""


def last_appends(engine: sa.Engine) -> dict[str, datetime | None]:
    """The sources the event log has events of, each with the time of its last append."""
    query = sa.select(log_heads.c.source, log_heads.c.updated_at).where(log_heads.c.head > 0)
    try:
        with engine.connect() as conn:
            return {str(source): at for source, at in conn.execute(query)}
    except SQLAlchemyError as exc:
        raise EventLogUnreadable(
            f"the event log cannot be read to check tenant registries' shared databases: "
            f"{describe_db_error(exc)}"
        ) from exc


def precedence(name: str, appends: Appends) -> tuple[bool, float, str]:
    """Sort key of the members reading one outbox: the first keeps it (members the log has
    no events of last, by name)."""
    if name not in appends:
        return (True, 0.0, name)
    at = appends[name]
    return (False, float("inf") if at is None else -at.timestamp(), name)


def split_note(names: list[str]) -> str:
    """What a refused member's error adds when the log has events of several of ``names``
    (sorted): one aggregate's events may be split between them."""
    return (
        f"; the event log has events of both {' and '.join(names)}: one aggregate's "
        f"events may be split between them (see README, A tenant registry)"
    )


class StoreAppends:
    """:func:`last_appends` of the event log in the store at ``url``, read once when first
    asked (``outbox init``: a registry's rows naming one database), or ``{}`` when it cannot
    be read, saying why in :attr:`unreadable`: then no member keeps a shared database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.unreadable: str | None = None
        self._appends: dict[str, datetime | None] | None = None

    def __call__(self) -> Appends:
        if self._appends is None:
            self._appends = self._read()
        return self._appends

    def _read(self) -> dict[str, datetime | None]:
        url = sa.make_url(self.url)
        if url.get_backend_name() == "sqlite" and not os.path.exists(url.database or ""):
            self.unreadable = "the event log cannot be read: its store has no database file"
            return {}
        bounded = {} if url.get_backend_name() == "sqlite" else {"connect_timeout": 5}
        engine = create_engine(self.url, **({"connect_args": bounded} if bounded else {}))
        try:
            return last_appends(engine)
        except EventLogUnreadable as exc:
            self.unreadable = str(exc)
            return {}
        finally:
            engine.dispose()
