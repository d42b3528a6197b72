"""The blue/green rebuild of :class:`projections.replay.Replayer` (see that module's
docstring): the leftovers of an earlier replay dropped, the shadow tables filled pass after
pass until within a batch of the log head, what was made by hand on the live tables carried,
and the swap, in one transaction under the live lanes' locks, retried on contention (a lock
timeout, a deadlock: :func:`is_transient`); the old tables dropped after it under a bounded
lock wait."""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg
import sqlalchemy as sa
import structlog
from sqlalchemy.exc import OperationalError

from outbox.errors import StoreError
from outbox.migrate_locks import LockWatch
from projections.replay_apply import Refused
from projections.replay_catch_up import CatchUp
from projections.replay_fill import ShadowFill
from projections.replay_policy import HandlerError, Overruled
from projections.replay_types import ReplayOptions, ReplaySummary
from projections.shadow_blocked import swap_blocked
from projections.shadow_drop import drop_leftovers, drop_old_tables
from projections.shadow_keys import (
    LateOutsideKeys,
    OutsideKey,
    pg_add_outside_keys,
    pg_drop_outside_keys,
    pg_drop_outside_keys_or_warn,
)
from projections.shadow_leftovers import pick_unmarked
from projections.sql_settle import lock_parked, settle_parked
from projections.store import Lane
from projections.store_tables import checkpoints

logger = structlog.get_logger("readmodel.replay")

_SWAP_ATTEMPTS = 5
_SWAP_LOCK_TIMEOUT_MS = 5000
_DROP_ATTEMPTS = 3  # the old tables after the swap: left for later rather than wait long
_DROP_LOCK_TIMEOUT_MS = 1000  # past the server's deadlock_timeout (autovacuum gives way then)


class BlueGreenRebuild(ShadowFill):
    """Rebuilding the projection's tables in shadows and swapping them in (see the module
    docstring)."""

    _postgresql: bool
    left_alone: list[str]

    def _cleanup(self, *, refuse: bool = True, unmarked: Sequence[str] = ()) -> list[str]:
        named: list[str] = []
        if unmarked:
            with self._write() as conn:
                named = pick_unmarked(self.shadow.lookalikes(conn), unmarked, self.projection.name)
        self.shadow.warned.update(named)  # dropped, not left alone
        if self._postgresql:  # under a bounded lock wait: the tables they reference are locked
            pg_drop_outside_keys(self._write, self.shadow.outside_keys, **_lock_wait())
        with self._write() as conn:
            found = self.shadow.leftovers(conn)
            self.left_alone = [n for n in self.shadow.lookalikes(conn) if n not in named]
            found += [n for n in named if n not in found]
        # Short waits (each queues on what an old table references); before a rebuild, an
        # old table still held is left for its swap to rename and drop after (not refuse).
        drop_leftovers(self.store.writer, found, self.projection.name, refuse, **_drop_wait())
        with self._write() as conn:
            conn.execute(
                checkpoints.delete().where(checkpoints.c.projection == self.shadow_projection)
            )
        return found

    def _rebuild(self, options: ReplayOptions, summary: ReplaySummary) -> None:
        self._cleanup(refuse=False)
        sources: list[str] = []
        progress: dict[str, int] = {}
        summary.applied = {}
        with self._write() as conn:
            self.shadow.create(conn)
        catch_up = CatchUp(self.batch_size)
        first = True
        while True:
            if not first:  # skipped since: left out of this pass
                self._reread_skips()
                self._apply_overruled(summary)
            first = False
            heads = self.reader.heads()
            added = self._add_sources(sources, progress, self.projection.lane_sources(heads))
            behind = 0
            for source in sources:
                behind += heads.get(source, 0) - progress[source]
                progress[source] = self._fill(
                    source, progress[source], heads.get(source, 0), summary
                )
                if heads.get(source, 0) > progress[source]:
                    progress[source] = heads.get(source, 0)
                    self._set_shadow_checkpoint_now(source, progress[source])
            if catch_up.done(behind, added=bool(added)):
                break
        if not self._postgresql:  # no indexes or keys made by hand to carry: no write lock
            self.hooks.before_swap()
            self._swap(sources, progress, summary)
            return
        outside: list[OutsideKey] = []
        with self._write() as conn:  # indexes and constraints made by hand, once filled
            self.shadow.carry(conn, outside=outside)
        try:
            pg_add_outside_keys(self._write, outside, **_lock_wait())
            self.hooks.before_swap()
            self._carry_late_keys()
            self._swap(sources, progress, summary)
        except BaseException:  # a shadow left keeping them would hold up the tables outside
            pg_drop_outside_keys_or_warn(
                self._write, self.shadow.outside_keys, self.projection.name, **_lock_wait()
            )
            raise

    def _carry_late_keys(self) -> None:
        """Carry what was made by hand on the live tables during the rebuild now, not under
        the swap's lock: the foreign keys to tables outside as the first ones (validated
        apart, a scan of the shadow), the other objects in the shadow's transaction."""
        late: list[OutsideKey] = []
        attempt = 0  # a lock timeout, a deadlock: retried as the swap is
        while True:
            late.clear()
            try:
                with self._write() as conn:
                    self.shadow.carry(conn, warn=False, outside=late)
                break
            except StoreError as exc:
                attempt += 1
                if not is_transient(exc.__cause__):
                    raise
                if attempt == _SWAP_ATTEMPTS:
                    raise StoreError(f"{exc} (after {attempt} attempts)") from exc.__cause__
                self._back_off("replay carry retried", exc, attempt)
        pg_add_outside_keys(self._write, late, **_lock_wait())

    def _back_off(self, event: str, exc: StoreError, attempt: int, **why: str) -> None:
        """Warn of a transient failure of ``attempt`` (retried), then wait longer each time."""
        logger.warning(event, projection=self.projection.name, error=str(exc), **why)
        time.sleep(0.2 * attempt)

    def _add_sources(
        self, sources: list[str], progress: dict[str, int], found: Sequence[str]
    ) -> list[str]:
        """Add the sources of ``found`` not yet rebuilt (the members of a group grow while
        the rebuild runs: a new tenant) from position 0; returns them."""
        new = [s for s in found if s not in progress]
        if new:
            with self._write() as conn:
                self._init_shadow_checkpoints(conn, new)
            sources.extend(new)
            progress.update(dict.fromkeys(new, 0))
        return new

    def _init_shadow_checkpoints(self, conn: sa.Connection, sources: Sequence[str]) -> None:
        rows = [
            {"projection": self.shadow_projection, "source": s, "partition": p, "position": 0}
            for s in sources
            for p in range(self.projection.partitions)
        ]
        if rows:
            conn.execute(checkpoints.insert(), rows)

    def _swap(self, sources: list[str], progress: dict[str, int], summary: ReplaySummary) -> None:
        attempt = 0  # transient failures (lock timeouts, deadlocks) only: skips are progress
        late_rounds = 0  # rolled back for keys to tables outside made meanwhile
        while True:
            mark = self._policy.mark()
            catch_up: dict[str, int] = {}  # after a failure: the events to apply outside
            applied: dict[str, int] = {}
            self._add_sources(sources, progress, self.projection.lane_sources(self.reader.heads()))
            lanes = sorted(
                (
                    Lane(self.projection.name, s, p)
                    for s in sources
                    for p in range(self.projection.partitions)
                ),
                key=lambda lane: (lane.source, lane.partition),
            )
            watch: LockWatch | None = None  # the table the swap waits to lock, if any
            try:
                with self._write() as conn, LockWatch(self.store.writer, conn) as watch:
                    if conn.dialect.name == "postgresql":
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {_SWAP_LOCK_TIMEOUT_MS}")
                    live = {lane: self.store.lock_lane(conn, lane) for lane in lanes}
                    # The last read of the skipped set: a skip committed before it (the
                    # live lanes locked: none of their batches applies its aggregate's
                    # later events meanwhile) is left out of the catch-up below; one
                    # after it waits for the swap (the parked entries locked first).
                    lock_parked(conn, self.projection.name)
                    self._reread_skips(conn)
                    if self._skips is not None and self._policy.overruled(self._skips.late):
                        raise Overruled  # the rebuild skipped one of them: settled outside
                    targets = {
                        s: max(
                            [progress[s], *(cp for lane, cp in live.items() if lane.source == s)]
                        )
                        for s in sources
                    }
                    for source in sources:
                        applied[source] = 0
                        for events in self._stream(source, progress[source], targets[source]):
                            applied[source] += self._apply(
                                conn, events, self.shadow.mapping, lock_rows=False
                            )
                    old_tables = self.shadow.swap(conn)
                    invalidation = self._journal_whole_projection(conn)
                    for lane in lanes:
                        self.store.set_checkpoint(conn, lane, targets[lane.source])
                    # A member source first logged after the heads were read (a new tenant)
                    # was applied live to the old tables only: it starts again from 0.
                    conn.execute(
                        checkpoints.delete().where(
                            checkpoints.c.projection == self.projection.name,
                            checkpoints.c.source.not_in(sources),
                        )
                    )
                    summary.released_parked = settle_parked(
                        self.store, conn, self.projection.name, self._policy.skipped, self._skips
                    )
                    conn.execute(
                        checkpoints.delete().where(
                            checkpoints.c.projection == self.shadow_projection
                        )
                    )
            except Overruled:
                self._policy.undo(mark)
                self._apply_overruled(summary)
                continue
            except HandlerError as failed:
                self._policy.undo(mark)
                catch_up = {failed.event.source: failed.event.position or 0}
            except Refused:  # somewhere among the late events: all of them, outside
                self._policy.undo(mark)
                catch_up = self.reader.heads()
            except LateOutsideKeys as late:  # made since _carry_late_keys: add them outside
                self._policy.undo(mark)
                late_rounds += 1
                if late_rounds == _SWAP_ATTEMPTS:  # someone keeps making them: not forever
                    raise late.gave_up(self.projection.name, late_rounds) from None
                pg_add_outside_keys(self._write, late.keys, **_lock_wait())
                continue
            except StoreError as exc:
                attempt += 1
                if not is_transient(exc.__cause__):
                    raise
                blocked = swap_blocked(
                    self.store.writer, self.shadow, exc.__cause__, watch, _SWAP_LOCK_TIMEOUT_MS
                )
                why = {"blocked": blocked.describe()} if blocked else {}
                if attempt == _SWAP_ATTEMPTS:
                    if blocked is None:
                        raise
                    raise StoreError(f"{exc} ({blocked.describe()})") from exc.__cause__
                self._policy.undo(mark)
                self._back_off("replay swap retried", exc, attempt, **why)
                continue
            if not catch_up:
                self.swapped = True
                break
            # A late event's handler failed, or a late write was refused: the late events up
            # to it (to the heads) are applied outside the swap as the fill applies them
            # (those before a failing event first, a refused write found by halves), where
            # it stops the replay or is skipped; the swap then starts again after them.
            self._reread_skips()
            self._apply_overruled(summary)
            for source in sources:
                if catch_up.get(source, 0) > progress[source]:
                    progress[source] = self._fill(
                        source, progress[source], catch_up[source], summary
                    )
        self._invalidate(invalidation)
        why = drop_old_tables(self.store.writer, old_tables, self.projection.name, **_drop_wait())
        summary.left_behind, summary.left_because = (old_tables, why) if why else ([], None)
        for source, count in applied.items():
            summary.applied[source] = summary.applied.get(source, 0) + count
            self._report(source, targets[source], count)
        summary.checkpoints = targets
        summary.tables = [t.name for t in self.projection.tables]


def _lock_wait() -> dict[str, int]:
    """How long, and how many times, a carry statement (or the drop of a shadow's keys)
    waits for a lock that an application's transaction holds (on a table outside)."""
    return {"lock_timeout_ms": _SWAP_LOCK_TIMEOUT_MS, "attempts": _SWAP_ATTEMPTS}


def _drop_wait() -> dict[str, int]:
    """How long past ``deadlock_timeout``, and how many times, dropping old tables (after the
    swap, or left by an earlier replay) waits for a lock (on them or on a table their foreign
    keys reference) before leaving them or refusing."""
    return {"lock_timeout_ms": _DROP_LOCK_TIMEOUT_MS, "attempts": _DROP_ATTEMPTS}


def is_transient(exc: BaseException | None) -> bool:
    """Whether ``exc`` (a driver error, or SQLAlchemy's wrapping of one) is a lock timeout, a
    deadlock, a serialization failure or SQLite's busy database: contention, retried."""
    orig = getattr(exc, "orig", exc)
    return isinstance(
        orig,
        psycopg.errors.LockNotAvailable
        | psycopg.errors.DeadlockDetected
        | psycopg.errors.SerializationFailure,
    ) or (isinstance(exc, OperationalError) and "locked" in str(exc))
