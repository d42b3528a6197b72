"""A document rebuild's swap, seen from the live lanes: which session holds their checkpoints,
and whether its replay is still alive.

The swap writes every lane's checkpoint first thing in its transaction
(:mod:`projections.document_replay`). A replay killed inside that transaction leaves it
open: MongoDB ends it only after ``transactionLifetimeLimitSeconds`` (60 s by default, the
SecantusDB test server alike), and every live batch's checkpoint write conflicts with it
until then. So the swap records its session in ``rm_swaps`` (outside its transaction)
before it writes the checkpoints, and a thread of its replay counts a heartbeat there while
the swap runs. A live worker whose checkpoint writes keep conflicting looks at it
(:class:`DeadSwapWatch`): a heartbeat that has not moved for :data:`DEAD_AFTER` seconds (by
the worker's own clock, whatever the machines' clocks say) is a dead replay's, whose session
it kills (``killSessions``, which aborts its transaction). A replay merely stopped (not
killed) finds its transaction gone at its next statement and runs the swap again. The
next replay, which waits for the dead one's lease to expire, ends its swap likewise
(:func:`end_swap_of`) before it takes the lease over: the swap's transaction holds the
lease document too. A refused ``killSessions`` is warned about once per swap.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from pymongo.client_session import ClientSession
from pymongo.errors import PyMongoError

from outbox.mongo_connection import describe_mongo_error

logger = structlog.get_logger("readmodel.replay")

SWAPS = "rm_swaps"
BEAT_SECONDS = 0.5
DEAD_AFTER = 5.0
"""Seconds a swap's heartbeat may stand still before a live worker ends its session."""
CHECK_AFTER = 1.0
"""Seconds of conflicts on a lane's checkpoint before a live worker looks at the swap."""


@contextmanager
def swap_heartbeat(
    database: Any, projection: str, owner: str | None = None
) -> Iterator[Callable[[ClientSession], None]]:
    """Yields ``record(session)``, to call in each attempt of the swap's transaction once it
    proved the replay's lease; beats until exit, when the record goes. The record carries
    ``owner`` (the replay's lease owner; a new id without one): a replay beats and removes
    only its own record, whatever another replay in the same process does."""
    swaps = database[SWAPS]
    holder = f"{socket.gethostname()}:{os.getpid()}"
    owner = owner or uuid.uuid4().hex
    stop = threading.Event()

    def record(session: ClientSession) -> None:
        swaps.update_one(
            {"_id": projection},
            {
                "$set": {"lsid": session.session_id, "holder": holder, "owner": owner},
                "$inc": {"beat": 1},
            },
            upsert=True,
        )

    def beat() -> None:
        while not stop.wait(BEAT_SECONDS):
            try:
                swaps.update_one({"_id": projection, "owner": owner}, {"$inc": {"beat": 1}})
            except PyMongoError as exc:
                logger.warning(
                    "cannot beat the swap's heartbeat",
                    projection=projection,
                    error=describe_mongo_error(exc),
                )

    thread = threading.Thread(target=beat, name=f"swap-beat-{projection}", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        stop.set()
        thread.join()
        try:
            swaps.delete_one({"_id": projection, "owner": owner})
        except PyMongoError as exc:  # a live worker ignores a record whose session is gone
            logger.warning(
                "cannot remove the swap's record",
                projection=projection,
                error=describe_mongo_error(exc),
            )


def end_swap_of(database: Any, projection: str, owner: str) -> None:
    """End the session of the swap of the replay whose lease ``owner`` expired (before a
    replay takes its lease over): a killed replay's swap transaction holds the lease
    document and the lanes' checkpoints until the server's transaction lifetime.

    A record without an owner was written by the previous release, whose swap recorded no
    owner: it is taken for the expired lease's too. No swap that could still commit is
    behind it: a replay's swap proves the projection's one lease in its transaction, and
    that lease has expired and is being taken over, so the replay that wrote the record is
    dead, or stalled past its lease (or was taken over before), and its swap would not
    commit after the takeover anyway."""
    found = None
    try:
        found = database[SWAPS].find_one(
            {"_id": projection, "$or": [{"owner": owner}, {"owner": {"$exists": False}}]}
        )
        if found is None:
            return
        _end(database, projection, found)
    except PyMongoError as exc:
        _refused(projection, found, exc)
        return
    _ended(projection, found, None)


class DeadSwapWatch:
    """One live batch's look at a swap while its checkpoint write keeps conflicting."""

    def __init__(self, database: Any, projection: str) -> None:
        self.database = database
        self.projection = projection
        self.conflicting_since: float | None = None
        self.seen: tuple[Any, int] | None = None  # (lsid, beat)
        self.seen_at = 0.0

    def conflicted(self) -> None:
        """A conflict: after :data:`CHECK_AFTER` seconds of them, end the session of a swap
        whose heartbeat stood still for :data:`DEAD_AFTER` seconds."""
        now = time.monotonic()
        if self.conflicting_since is None:
            self.conflicting_since = now
        if now - self.conflicting_since < CHECK_AFTER:
            return
        found = None
        try:
            found = self.database[SWAPS].find_one({"_id": self.projection})
            if found is None:
                self.seen = None
                return
            current = (found["lsid"], int(found.get("beat", 0)))
            if current != self.seen:
                self.seen, self.seen_at = current, now
                return
            if now - self.seen_at < DEAD_AFTER:
                return
            _end(self.database, self.projection, found)
        except PyMongoError as exc:
            self.seen_at = now  # tried again after DEAD_AFTER more
            _refused(self.projection, found, exc)
            return
        self.seen = None
        _ended(self.projection, found, round(now - self.seen_at, 1))


_told: dict[tuple[str, bool], str] = {}
"""Per projection, the dead swap (its session, as text) whose refused end was warned of,
and apart (``True``) that its record could not be read: two entries per projection at
most, gone once a swap of it was ended."""
_told_lock = threading.Lock()


def _end(database: Any, projection: str, found: dict[str, Any]) -> None:
    database.client.admin.command("killSessions", [found["lsid"]])
    database[SWAPS].delete_one({"_id": projection, "beat": found.get("beat")})


def _refused(projection: str, found: dict[str, Any] | None, exc: PyMongoError) -> None:
    """Warn once per dead swap per process (each stuck batch tries again every
    :data:`DEAD_AFTER` seconds), then at debug level; a record that could not be read
    (``found`` is ``None``) is remembered apart, not as another swap than the last one."""
    key = (projection, found is None)
    swap = repr(None if found is None else found.get("lsid"))
    with _told_lock:
        first = _told.get(key) != swap
        _told[key] = swap
    (logger.warning if first else logger.debug)(
        "cannot end the session of a stalled swap",
        projection=projection,
        holder=None if found is None else found.get("holder"),
        error=describe_mongo_error(exc),
    )


def _ended(projection: str, found: dict[str, Any], silent_for: float | None) -> None:
    with _told_lock:
        _told.pop((projection, False), None)
        _told.pop((projection, True), None)
    logger.warning(
        "a replay died in its swap: its transaction, which held the lanes' checkpoints, "
        "was ended; the live model is unchanged: replay again",
        projection=projection,
        holder=found.get("holder"),
        silent_for=silent_for,
    )
