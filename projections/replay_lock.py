"""One replay per projection at a time: a PostgreSQL advisory lock, on SQLite an exclusive
``flock`` on ``<database>.replay-<projection>.lock``, on a MongoDB store a lease document in
``rm_replay_locks`` (:func:`mongo_replay_lease`)."""

from __future__ import annotations

import hashlib
import math
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from pymongo.errors import DuplicateKeyError, PyMongoError

from outbox.errors import StoreError
from outbox.mongo_connection import describe_mongo_error
from projections.document_swap_guard import end_swap_of
from projections.replay_types import ReplayLocked
from projections.sql_store import SqlStore

REPLAY_LOCKS = "rm_replay_locks"
LEASE_SECONDS = 30.0

logger = structlog.get_logger("readmodel.replay")


def checked_lease(lease: float) -> float:
    """``lease`` if it is a positive, finite number of seconds; raises :class:`ValueError`
    otherwise (a lease of 0 or less is expired at once and renewed in a busy loop)."""
    number = isinstance(lease, int | float) and not isinstance(lease, bool)
    if not (number and math.isfinite(lease) and lease > 0):
        raise ValueError(f"a replay lease must be a positive number of seconds, not {lease!r}")
    return lease


def _busy(projection: str, detail: str = "") -> ReplayLocked:
    return ReplayLocked(
        f"another replay of {projection!r} is running (or cleaning up){detail}; "
        f"wait for it to finish"
    )


@contextmanager
def replay_lock(store: Any, projection: str, lease: float = LEASE_SECONDS) -> Iterator[str | None]:
    """Held for a replay's whole run; raises :class:`ReplayLocked` when another holds it.
    Yields the lease's owner id on a MongoDB store (``None`` otherwise), whose lease lasts
    ``lease`` seconds unless renewed (a positive number: :func:`checked_lease`)."""
    checked_lease(lease)
    if not isinstance(store, SqlStore):
        with mongo_replay_lease(store.database, projection, lease) as owner:
            yield owner
        return
    with sql_replay_lock(store, projection):
        yield None


class LockProof:
    """Tells a replay's transaction, just before it commits, whether the replay still holds
    its lock: the PostgreSQL session holding the advisory lock is still there (a restart,
    an idle-session or proxy timeout, a terminated backend end it, and the lock with it),
    or the SQLite lock file is still the one locked (not removed or replaced). Checked at the
    end: while a transaction that found it held is open, another replay that takes the lock
    waits for that transaction's table locks before it drops or writes a shadow."""

    def __init__(self, projection: str, check: Any) -> None:
        self.projection = projection
        self._check = check

    def check(self, conn: sa.Connection) -> None:
        """Raise :class:`ReplayLocked` (the transaction rolls back) once the lock is lost."""
        lost = self._check(conn)
        if lost:
            raise ReplayLocked(
                f"{self.projection}: this replay lost its lock ({lost}): another replay may "
                f"hold it now; stopped, its last transaction rolled back (a rebuild's live "
                f"model is as it was; in place, the batches committed before stay applied). "
                f"Replay again"
            )


_PG_HOLDS = """
SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                WHERE l.locktype = 'advisory' AND l.granted AND l.pid = %(pid)s
                  AND d.datname = current_database() AND l.objsubid = 1
                  AND l.classid::bigint = %(classid)s AND l.objid::bigint = %(objid)s)
"""


@contextmanager
def sql_replay_lock(store: SqlStore, projection: str) -> Iterator[LockProof | None]:
    """:func:`replay_lock` on a SQL store; yields what proves it held (``None`` for an
    in-memory SQLite database, which no other process can reach)."""
    busy = _busy(projection)
    if store.kind == "postgresql":
        key = int.from_bytes(
            hashlib.blake2b(f"readmodel-replay:{projection}".encode(), digest_size=8).digest(),
            "big",
            signed=True,
        )
        unsigned = key & 0xFFFF_FFFF_FFFF_FFFF  # pg_locks shows its halves as two oids
        with store.engine.connect() as conn:
            if not conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one():
                raise busy
            pid = conn.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()
            conn.commit()
            held = {"pid": pid, "classid": unsigned >> 32, "objid": unsigned & 0xFFFF_FFFF}

            def pg_lost(tx: sa.Connection) -> str | None:
                if tx.exec_driver_sql(_PG_HOLDS, held).scalar_one():
                    return None
                return f"the database session holding it (pid {pid}) ended"

            try:
                yield LockProof(projection, pg_lost)
            finally:
                try:
                    conn.rollback()
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                    conn.commit()
                except sa.exc.DBAPIError:  # that session ended: so did its lock
                    conn.invalidate()
        return
    import fcntl

    database = store.engine.url.database
    if not database or database == ":memory:":
        yield None
        return
    path = Path(f"{database}.replay-{projection}.lock")
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        locked = os.fstat(handle.fileno())

        def file_lost(tx: sa.Connection) -> str | None:
            try:
                now = os.stat(path)
            except FileNotFoundError:
                return f"its lock file {path} was removed"
            if (now.st_dev, now.st_ino) != (locked.st_dev, locked.st_ino):
                return f"its lock file {path} was replaced"
            return None

        try:
            yield LockProof(projection, file_lost)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def mongo_replay_lease(
    database: Any, projection: str, lease: float = LEASE_SECONDS
) -> Iterator[str]:
    """A lease document ``{_id: projection, owner, expires_at}``, renewed every third of
    ``lease`` by a thread (once no transaction of the replay is open, :func:`proving`) and
    deleted on exit; yields the owner id (a swap checks it in
    its transaction, see :func:`held_by`). A process killed while holding it blocks the
    next replay until ``expires_at`` (by the machines' clocks: keep them in sync); the
    replay taking it over then ends that process's swap, if it died in one (its open
    transaction holds the lease document)."""
    checked_lease(lease)
    locks = database[REPLAY_LOCKS]
    owner = uuid.uuid4().hex
    holder = f"{socket.gethostname()}:{os.getpid()}"
    try:
        now = datetime.now(UTC)
        document = {"owner": owner, "holder": holder, "expires_at": now + timedelta(seconds=lease)}
        try:
            locks.insert_one({"_id": projection, **document})
        except DuplicateKeyError:
            found = locks.find_one({"_id": projection}) or {}
            taken = None
            if _expired(found, now):
                end_swap_of(database, projection, found["owner"])
                taken = locks.find_one_and_update(
                    {"_id": projection, "owner": found["owner"], "expires_at": {"$lt": now}},
                    {"$set": document},
                )
            if taken is None:
                raise _busy(
                    projection,
                    f": {found.get('holder', '?')} holds its lease until "
                    f"{found.get('expires_at', now):%Y-%m-%d %H:%M:%S} UTC, if it died",
                ) from None
            logger.warning("took over an expired replay lease", projection=projection)
    except PyMongoError as exc:
        raise StoreError(
            f"{projection}: cannot take the replay lock: {describe_mongo_error(exc)}"
        ) from exc
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease / 3):
            with _open_changed:  # a transaction's commit renews it: see proving()
                while owner in _open and not stop.is_set():
                    _open_changed.wait(lease / 3)
            if stop.is_set():
                return
            try:
                renewed = locks.update_one(
                    {"_id": projection, "owner": owner},
                    {"$set": {"expires_at": datetime.now(UTC) + timedelta(seconds=lease)}},
                )
            except PyMongoError as exc:
                logger.warning(
                    "cannot renew the replay lease", projection=projection, error=str(exc)
                )
                continue
            if renewed.matched_count == 0:
                logger.error("the replay lease was taken over", projection=projection)
                return

    thread = threading.Thread(target=renew, name=f"replay-lease-{projection}", daemon=True)
    thread.start()
    try:
        yield owner
    finally:
        stop.set()
        thread.join()
        try:
            locks.delete_one({"_id": projection, "owner": owner})
        except PyMongoError as exc:  # it expires
            logger.warning("cannot release the replay lease", projection=projection, error=str(exc))


_open: dict[str, int] = {}
"""Per lease owner, how many transactions of its replay are open (:func:`proving`)."""
_open_changed = threading.Condition()


@contextmanager
def proving(owner: str | None) -> Iterator[None]:
    """Around each transaction of the replay holding ``owner``'s lease (which proves and
    renews the lease in it, :func:`prove_lease`): the lease's thread renews it only once
    no such transaction is open. A renewal committed while one runs made its proof
    conflict, at every attempt of a transaction longer than a third of the lease. A
    transaction longer than the whole lease lets it expire meanwhile: another replay may
    take it over, and that transaction's proof then fails."""
    if owner is None:
        yield
        return
    with _open_changed:
        _open[owner] = _open.get(owner, 0) + 1
    try:
        yield
    finally:
        with _open_changed:
            _open[owner] -= 1
            if not _open[owner]:
                del _open[owner]
                _open_changed.notify_all()


def _expired(lease: dict[str, Any], now: datetime) -> bool:
    expires = lease.get("expires_at")
    if not isinstance(expires, datetime) or "owner" not in lease:
        return False
    return (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) < now


def held_by(
    database: Any, projection: str, owner: str, session: Any, lease: float = LEASE_SECONDS
) -> bool:
    """Whether ``owner`` still holds the lease, checked (and renewed for ``lease`` seconds)
    in ``session``'s transaction: a swap commits only if its replay was not taken over."""
    renewed = database[REPLAY_LOCKS].update_one(
        {"_id": projection, "owner": owner},
        {"$set": {"expires_at": datetime.now(UTC) + timedelta(seconds=lease)}},
        session=session,
    )
    return renewed.matched_count == 1


def prove_lease(
    database: Any,
    projection: str,
    owner: str,
    session: Any,
    what: str,
    lease: float = LEASE_SECONDS,
) -> None:
    """Renew the lease in ``session``'s transaction, conditioned on ``owner``: a takeover
    committed since the transaction began conflicts with this write, so a replay's batch
    commits only while its replay holds the lease (a replay that stalled past its lease
    never writes into another's generation). Raises :class:`ReplayLocked` once it is lost.
    A batch does it last, so that a killed replay's open transaction rarely holds it."""
    if not held_by(database, projection, owner, session, lease):
        raise ReplayLocked(
            f"{projection}: this replay's lease was taken over by another (it stalled for "
            f"longer than the lease); {what}. The replay that took it over owns the "
            f"collections now"
        )
