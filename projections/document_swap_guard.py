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
killed) finds its transaction gone at its next statement and runs the swap again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from pymongo.client_session import ClientSession
from pymongo.errors import PyMongoError

from outbox.mongo import describe_mongo_error

logger = structlog.get_logger("readmodel.replay")

SWAPS = "rm_swaps"
BEAT_SECONDS = 0.5
DEAD_AFTER = 5.0
"""Seconds a swap's heartbeat may stand still before a live worker ends its session."""
CHECK_AFTER = 1.0
"""Seconds of conflicts on a lane's checkpoint before a live worker looks at the swap."""


@contextmanager
def swap_heartbeat(database: Any, projection: str) -> Iterator[Callable[[ClientSession], None]]:
    """Yields ``record(session)``, to call first in each attempt of the swap's transaction;
    beats until exit, when the record goes."""
    swaps = database[SWAPS]
    holder = f"{socket.gethostname()}:{os.getpid()}"
    stop = threading.Event()

    def record(session: ClientSession) -> None:
        swaps.update_one(
            {"_id": projection},
            {"$set": {"lsid": session.session_id, "holder": holder}, "$inc": {"beat": 1}},
            upsert=True,
        )

    def beat() -> None:
        while not stop.wait(BEAT_SECONDS):
            try:
                swaps.update_one({"_id": projection, "holder": holder}, {"$inc": {"beat": 1}})
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
            swaps.delete_one({"_id": projection, "holder": holder})
        except PyMongoError as exc:  # a live worker ignores a record whose session is gone
            logger.warning(
                "cannot remove the swap's record",
                projection=projection,
                error=describe_mongo_error(exc),
            )


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
            self.database.client.admin.command("killSessions", [found["lsid"]])
            self.database[SWAPS].delete_one({"_id": self.projection, "beat": current[1]})
        except PyMongoError as exc:
            self.seen_at = now  # tried again after DEAD_AFTER more
            logger.warning(
                "cannot end the session of a stalled swap",
                projection=self.projection,
                error=describe_mongo_error(exc),
            )
            return
        self.seen = None
        logger.warning(
            "a replay died in its swap: its transaction, which held the lanes' checkpoints, "
            "was ended; the live model is unchanged: replay again",
            projection=self.projection,
            holder=found.get("holder"),
            silent_for=round(now - self.seen_at, 1),
        )
