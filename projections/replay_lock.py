"""One replay per projection at a time: a PostgreSQL advisory lock, or on SQLite an
exclusive ``flock`` on ``<database>.replay-<projection>.lock``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from projections.replay_types import ReplayLocked
from projections.sql_store import SqlStore


@contextmanager
def replay_lock(store: SqlStore, projection: str) -> Iterator[None]:
    """Held for a replay's whole run; raises :class:`ReplayLocked` when another holds it."""
    busy = ReplayLocked(
        f"another replay of {projection!r} is running (or cleaning up); wait for it to finish"
    )
    if store.kind == "postgresql":
        key = int.from_bytes(
            hashlib.blake2b(f"readmodel-replay:{projection}".encode(), digest_size=8).digest(),
            "big",
            signed=True,
        )
        with store.engine.connect() as conn:
            if not conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one():
                raise busy
            conn.commit()
            try:
                yield
            finally:
                conn.rollback()
                conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                conn.commit()
        return
    import fcntl

    database = store.engine.url.database
    if not database or database == ":memory:":
        yield
        return
    path = Path(f"{database}.replay-{projection}.lock")
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
