"""Stuck attempts the dying worker could not count in its store, kept in a file till next start.

On SQLite the stuck batch's own transaction holds the database's one write lock until the
process dies, so the exiting worker cannot count the stuck attempt in the store
(:func:`projections.stuck_events.counting`): a handler stuck on every attempt would make
every restarted worker exit again, nothing ever parked. Such an attempt is appended instead
to a journal file beside the database (:meth:`projections.store.Store.stuck_journal`; a
SQLite store is local to its machine), one JSON line each; :func:`replay`, run as a worker
starts, counts them in the store before parking looks at the counts, and removes the file.

Exactly once: each attempt has an id, written into the ``last_error`` it records (by the
dying worker's late write too, should its record go through after all). Replay takes the
journal aside (a rename, under a lock file: several worker processes start at once; its
holder removes it when done, see :func:`_replay_lock`) and skips every line of an event up
to the one whose id the store's ``last_error`` already names, so a start that died
half-way, or a late write, counts nothing twice (a start whose store failed half-way keeps
only the lines it did not count: its worker may count the event's next attempt, and that
error's id, before the next start). A line that cannot be read (cut short by a kill) or
names no known event is logged and dropped.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from outbox.error_text import describe_error
from projections.store import Lane, Store

if TYPE_CHECKING:
    from projections.engine import ProjectionEngine

logger = structlog.get_logger("readmodel.projections")

APPEND_WAIT = 2.0
"""Seconds an append waits for a replay in progress to let the journal go."""

_ATTEMPT = re.compile(r"\[attempt ([0-9a-f]{32})\]")


@dataclass(frozen=True)
class Attempt:
    """One stuck attempt not counted in the store when its worker exited."""

    attempt: str
    projection: str
    source: str
    position: int
    error: str


def attempt_of(error: str) -> str | None:
    """The attempt id a stuck attempt's ``last_error`` names, if any."""
    found = _ATTEMPT.search(error)
    return found.group(1) if found else None


def append(path: Path, attempt: Attempt) -> None:
    """Add ``attempt`` to the journal at ``path``, on disk (fsync) before returning.

    Under the file's own lock, re-opened if a replay took the file aside meanwhile; past
    :data:`APPEND_WAIT` written without the lock (an append of one line is atomic)."""
    line = _line(attempt)
    deadline = time.monotonic() + APPEND_WAIT
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            locked = _lock(fd, deadline)
            if locked and not _same_file(fd, path):
                continue  # taken aside by a replay while we waited: append to the new one
            os.write(fd, line)
            os.fsync(fd)
            return
        finally:
            os.close(fd)


def _lock(fd: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def replay(engine: ProjectionEngine) -> int:
    """Count the journalled stuck attempts of every store that keeps a journal; returns how
    many were counted now (not those counted already)."""
    counted = 0
    seen: set[int] = set()
    for store in engine.stores.values():
        path = store.stuck_journal()
        if path is None or id(store) in seen:
            continue
        seen.add(id(store))
        if path.exists() or _aside(path).exists() or _lock_path(path).exists():
            counted += _replay_store(engine, store, path)
    return counted


def _aside(path: Path) -> Path:
    return path.with_name(path.name + ".replaying")


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextmanager
def _replay_lock(path: Path) -> Iterator[None]:
    """Hold the replay lock of the journal at ``path``: an ``flock`` on ``<journal>.lock``.

    The holder removes the file before it lets go, so that none stays beside the database.
    That is safe because only the file at that path is the lock: a process that waited on a
    file removed meanwhile (or replaced by a newer one) holds nothing and takes the current
    one instead; the file is removed only by its holder, so two never hold it at once."""
    lock = _lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock):
            break
        os.close(fd)  # removed by the holder we waited for: not the lock any more
    try:
        yield
    finally:
        try:
            lock.unlink()  # still held: nobody can take this file once it is gone
        except FileNotFoundError:
            pass
        os.close(fd)


def _replay_store(engine: ProjectionEngine, store: Store, path: Path) -> int:
    aside = _aside(path)
    counted = 0
    with _replay_lock(path):
        # A file left aside by a start that died half-way first, then the current one.
        for taken in (False, True):
            if taken:
                if not path.exists():
                    break
                os.replace(path, aside)
            if not aside.exists():
                continue
            attempts = _read(aside, path)
            settled: set[int] = set()  # ids (id()) of the attempts dealt with
            try:
                counted += _count(engine, store, attempts, settled)
            except Exception:
                # The worker goes on and may count this event's next attempt itself: left
                # here, an attempt counted already would no longer be known as such.
                _keep(aside, [a for a in attempts if id(a) not in settled])
                raise
            aside.unlink()
    return counted


def _keep(path: Path, attempts: list[Attempt]) -> None:
    """Replace ``path`` by ``attempts`` alone (a new file renamed over it)."""
    new = path.with_name(path.name + ".new")
    new.write_bytes(b"".join(_line(attempt) for attempt in attempts))
    os.replace(new, path)


def _line(attempt: Attempt) -> bytes:
    return (json.dumps(attempt.__dict__, separators=(",", ":")) + "\n").encode()


def _read(path: Path, journal: Path) -> list[Attempt]:
    """The attempts of ``path`` (``journal`` taken aside), once no append is writing to
    it; bad lines logged (naming ``journal``) and skipped."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an append that began before the rename has ended
        with os.fdopen(os.dup(fd), "rb") as file:
            raw = file.read()
    finally:
        os.close(fd)
    attempts = []
    for number, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            attempts.append(_parse(json.loads(line)))
        except (ValueError, TypeError, KeyError) as exc:
            logger.error(
                "a line of the stuck attempts journal cannot be read; skipped (that attempt "
                "is not counted)",
                journal=str(journal),
                line=number,
                error=describe_error(exc),
                text=line[:200].decode(errors="replace"),
            )
    return attempts


def _parse(data: Any) -> Attempt:
    attempt = Attempt(
        attempt=str(data["attempt"]),
        projection=str(data["projection"]),
        source=str(data["source"]),
        position=int(data["position"]),
        error=str(data["error"]),
    )
    if attempt_of(attempt.error) != attempt.attempt:
        raise ValueError("the error does not name the attempt")
    return attempt


def _count(
    engine: ProjectionEngine, store: Store, attempts: list[Attempt], settled: set[int]
) -> int:
    """Count ``attempts`` not counted yet; each one dealt with (counted now or before, or
    dropped) goes into ``settled`` as it is."""
    by_event: dict[tuple[str, str, int], list[Attempt]] = {}
    for attempt in attempts:
        key = (attempt.projection, attempt.source, attempt.position)
        by_event.setdefault(key, []).append(attempt)
    counted = 0
    for (name, source, position), lines in by_event.items():
        projection = engine.projections.get(name)
        found = engine.reader.at_positions(source, [position]) if projection else []
        if projection is None or not found or engine.store_of(projection) is not store:
            logger.error(
                "stuck attempts journalled for an event this worker does not know; dropped",
                projection=name,
                source=source,
                position=position,
                attempts=len(lines),
            )
            settled.update(map(id, lines))
            continue
        event = found[0]
        lane = engine.lane_of(projection, event)
        due = _not_counted(store, lane, position, lines)
        settled.update(id(line) for line in lines if not any(line is d for d in due))
        for attempt in due:
            store.record_failure(lane, event, attempt.error)
            settled.add(id(attempt))
            counted += 1
            logger.info(
                "stuck attempt counted from the journal",
                projection=name,
                source=source,
                position=position,
            )
    return counted


def _not_counted(store: Store, lane: Lane, position: int, lines: list[Attempt]) -> list[Attempt]:
    """The lines after the last one the store counted already (its ``last_error``); none
    for an event applied or parked since."""
    if store.checkpoints(lane.projection).get((lane.source, lane.partition), 0) >= position:
        return []
    rows = store.failing(lane.projection, lane.source, after=position - 1, upto=position)
    if not rows and any(
        p.source == lane.source and p.position == position for p in store.parked(lane.projection)
    ):
        return []
    last = attempt_of(str(rows[0].get("last_error") or "")) if rows else None
    ids = [line.attempt for line in lines]
    return lines[ids.index(last) + 1 :] if last in ids else lines
