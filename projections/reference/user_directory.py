"""``user_directory``: the copy of each user other services need (id, e-mail, name, active)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from outbox.envelope import Envelope
from projections.api import Event, Projection, Tx, on
from projections.queries import Reader, query
from projections.reference.events import (
    AUTH,
    UserDeactivated,
    UserEmailChanged,
    UserRegistered,
)

metadata = sa.MetaData()

user_directory = sa.Table(
    "user_directory",
    metadata,
    sa.Column("user_id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(255), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
)


class UserDirectory(Projection):
    """Cached by user id (tag ``user:<id>``) and by e-mail."""

    name = "user_directory"
    tables = (user_directory,)
    key_tags = {"user_directory": "user:{user_id}"}

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        tx.prefetch(user_directory, [e.aggregate_id for e in events])

    @on(AUTH, "UserRegistered")
    def registered(self, event: Event[UserRegistered], tx: Tx) -> None:
        p = event.payload
        tx.upsert(
            user_directory,
            {
                "user_id": p.user_id,
                "email": p.email,
                "name": f"{p.first_name} {p.last_name}",
                "active": True,
            },
        )

    @on(AUTH, "UserEmailChanged")
    def email_changed(self, event: Event[UserEmailChanged], tx: Tx) -> None:
        p = event.payload
        row = tx.get(user_directory, p.user_id) or _unknown(p.user_id)
        tx.upsert(user_directory, {**row, "email": p.email})

    @on(AUTH, "UserDeactivated")
    def deactivated(self, event: Event[UserDeactivated], tx: Tx) -> None:
        row = tx.get(user_directory, event.payload.user_id) or _unknown(event.payload.user_id)
        tx.upsert(user_directory, {**row, "active": False})

    @query("by_id", tags=lambda user_id: [f"user:{user_id}"])
    def by_id(self, read: Reader, user_id: str) -> dict[str, Any] | None:
        """One user by id."""
        return read.get(user_directory, user_id)

    @query("by_email", cache_tags=lambda row: [f"user:{row['user_id']}"] if row else [])
    def by_email(self, read: Reader, email: str) -> dict[str, Any] | None:
        """The user who has this e-mail address now."""
        return read.first(user_directory, email=email)


def _unknown(user_id: str) -> dict[str, Any]:
    """A user whose registration was not seen (events of one user arrive in order, so only
    a log that starts mid-history gets here): kept, with what the event tells."""
    return {"user_id": user_id, "email": "", "name": "", "active": True}
