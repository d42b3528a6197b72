"""The cache invalidation journal of a SQL store (``rm_invalidations``): an invalidation is
journaled in the transaction that changes the read model, so that one the cache never heard of
(a crash, Redis down) is redone (:mod:`projections.invalidations`). :class:`SqlInvalidations`
is mixed into :class:`projections.sql_store.SqlStore`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error
from outbox.errors import StoreError
from projections.store import Invalidation
from projections.store_tables import invalidations

__all__ = ["SqlInvalidations"]


class SqlInvalidations:
    """The invalidation journal half of a SQL store; needs its ``engine`` and ``writer``."""

    engine: sa.Engine
    writer: sa.Engine
    journal_invalidations: bool

    def journal(
        self, conn: sa.Connection, projection: str, tags: set[str] | None
    ) -> Invalidation | None:
        """Journal an invalidation of ``tags`` in ``conn``'s transaction, so that it is redone
        if the process dies before the cache hears of it; ``None`` when there are no tags."""
        if not tags:
            return None
        ordered = tuple(sorted(tags))
        row_id = conn.execute(
            invalidations.insert()
            .values(
                projection=projection,
                tags=orjson.dumps(ordered).decode(),
                created_at=sa.func.now(),  # the clock pending_invalidations measures with
            )
            .returning(invalidations.c.id)
        ).scalar_one()
        return Invalidation(int(row_id), projection, ordered)

    def journal_invalidation(self, projection: str, tags: Sequence[str]) -> Invalidation | None:
        if not self.journal_invalidations:
            return None
        try:
            with self.writer.begin() as conn:
                return self.journal(conn, projection, set(tags))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write rm_invalidations: {describe_db_error(exc)}") from exc

    def pending_invalidations(
        self, older_than: float = 0.0, limit: int = 1000
    ) -> list[Invalidation]:
        """Journaled invalidations at least ``older_than`` seconds old by the store's own
        clock (``now()`` in the same query): a host whose clock is behind would otherwise
        redo lost ones late (caches stale longer), one ahead would redo them early."""
        query = sa.select(invalidations).order_by(invalidations.c.id).limit(limit)
        if older_than > 0:
            query = query.where(self._older_than(invalidations.c.created_at, older_than))
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read rm_invalidations: {describe_db_error(exc)}") from exc
        return [Invalidation(r.id, r.projection, tuple(orjson.loads(r.tags))) for r in rows]

    def _older_than(self, column: sa.ColumnElement[Any], seconds: float) -> sa.ColumnElement[bool]:
        if self.engine.dialect.name == "sqlite":  # CURRENT_TIMESTAMP text, UTC
            return sa.func.julianday(column) <= sa.func.julianday("now") - seconds / 86400.0
        return column <= sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)

    def forget_invalidations(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        try:
            with self.writer.begin() as conn:
                conn.execute(invalidations.delete().where(invalidations.c.id.in_(list(ids))))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot delete rm_invalidations: {describe_db_error(exc)}") from exc
