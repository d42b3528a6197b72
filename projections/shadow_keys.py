"""Foreign keys from a shadow table to tables outside the projection (PostgreSQL), carried
from the live table by a blue/green rebuild (:mod:`projections.shadow_constraints`).

Adding one takes SHARE ROW EXCLUSIVE on the referenced table until the transaction ends: it
queues behind any open transaction writing that table, and every later writer of it queues
behind the replay. So the rebuild adds them after the fill, apart from the other carried
objects (:func:`pg_add_outside_keys`): ``NOT VALID`` in a short transaction of its own under
a bounded lock wait (retried, like the swap), then ``VALIDATE CONSTRAINT`` in another, which
scans the shadow holding only ROW SHARE on the referenced table (its writers go on). A key
``NOT VALID`` on the live table stays so.

A shadow that keeps such a key refuses the deletes on the referenced table that would
orphan its rows (or cascades them into it). When a replay fails, or is interrupted, it
drops them (:func:`pg_drop_outside_keys`: DROP CONSTRAINT takes ACCESS EXCLUSIVE on the
referenced table, under a bounded wait too); a killed one cannot, and ``--dry-run`` names
what its leftover shadow holds (:func:`pg_outside_keys`).

One made by hand during the rebuild is carried the same way just before the swap; one the
swap still finds (made in between) makes it roll back and start again once the key is added
(:class:`LateOutsideKeys`): a validation never scans under the swap's locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
import structlog

from outbox.db import describe_db_error
from outbox.errors import StoreError
from projections.shadow_catalog import make_or_stop
from projections.shadow_constraints import HandMadeConstraint
from projections.shadow_names import run

logger = structlog.get_logger("readmodel.replay")

Write = Callable[[], AbstractContextManager[sa.Connection]]

_NOT_VALID = " NOT VALID"


@dataclass(frozen=True)
class OutsideKey:
    table: str  # the live table's name
    constraint: HandMadeConstraint  # its definition names the table outside
    shadow_sql: str
    name_sql: str  # the shadow name

    @property
    def validated(self) -> bool:
        return not self.constraint.definition.endswith(_NOT_VALID)


class LateOutsideKeys(Exception):
    """The swap found foreign keys to tables outside made since they were last carried: it
    rolls back, for them to be added and validated outside its lock, then swaps again."""

    def __init__(self, keys: list[OutsideKey]) -> None:
        super().__init__(", ".join(key.constraint.name for key in keys))
        self.keys = keys

    def gave_up(self, projection: str, rounds: int) -> StoreError:
        """The error of a swap that found such keys ``rounds`` times, these last."""
        return StoreError(
            f"{projection}: the swap found foreign keys to tables outside made during it "
            f"{rounds} times, lately {self}: it adds each outside its lock and swaps again, "
            f"but gave up; replay again once no more are being made"
        )


def _transient(exc: BaseException) -> bool:
    orig = getattr(exc.__cause__, "orig", exc.__cause__)
    return isinstance(orig, psycopg.errors.LockNotAvailable | psycopg.errors.DeadlockDetected)


def _bounded(
    write: Write, run: Callable[[sa.Connection], object], lock_timeout_ms: int, attempts: int
) -> None:
    """``run`` in a transaction of its own, waiting at most ``lock_timeout_ms`` for its
    locks, ``attempts`` times at most (a failure is a :class:`StoreError`)."""
    for attempt in range(1, attempts + 1):
        try:
            with write() as conn:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                run(conn)
            return
        except StoreError as exc:
            if not _transient(exc) or attempt == attempts:
                raise
            logger.warning("replay lock wait retried", error=str(exc))
            time.sleep(0.2 * attempt)


def pg_add_outside_keys(
    write: Write, keys: list[OutsideKey], *, lock_timeout_ms: int, attempts: int
) -> None:
    """Add ``keys`` to their shadows: ``NOT VALID``, then validated (unless they were not
    valid on the live table); one the rebuilt rows break stops the replay, naming it."""
    for key in keys:
        definition = key.constraint.definition
        statement = f"ALTER TABLE {key.shadow_sql} ADD CONSTRAINT {key.name_sql} {definition}"
        if key.validated:
            statement += _NOT_VALID
        steps = [statement]
        if key.validated:
            steps.append(f"ALTER TABLE {key.shadow_sql} VALIDATE CONSTRAINT {key.name_sql}")
        for step in steps:

            def run(conn: sa.Connection, step: str = step, key: OutsideKey = key) -> None:
                make_or_stop(conn, key.table, step, f"constraint {key.constraint.name}")

            _bounded(write, run, lock_timeout_ms, attempts)


_PG_OUTSIDE_KEYS = """
SELECT k.conrelid::regclass::text, quote_ident(k.conname), k.confrelid::regclass::text
  FROM pg_constraint k
 WHERE k.contype = 'f' AND k.conrelid = ANY(%(tables)s::regclass[])
   AND k.confrelid <> ALL(%(tables)s::regclass[])
 ORDER BY 1, 2
"""


def pg_outside_keys(conn: sa.Connection, shadows: list[str]) -> list[tuple[str, str, str]]:
    """``(shadow, constraint, referenced table)`` of the foreign keys from the shadows that
    exist among ``shadows`` (SQL names) to tables that are not shadows."""
    present = [
        str(name)
        for name in (
            conn.exec_driver_sql("SELECT to_regclass(%(t)s)::text", {"t": t}).scalar()
            for t in shadows
        )
        if name is not None
    ]
    if not present:
        return []
    rows = conn.exec_driver_sql(_PG_OUTSIDE_KEYS, {"tables": present}).all()
    return [(str(table), str(name), str(target)) for table, name, target in rows]


def pg_drop_outside_keys(
    write: Write,
    read: Callable[[sa.Connection], list[tuple[str, str, str]]],
    *,
    lock_timeout_ms: int,
    attempts: int,
) -> None:
    """Drop the keys ``read`` finds (:meth:`projections.shadow.ShadowTables.outside_keys`)."""
    with write() as conn:
        keys = read(conn)
    for table, name, _ in keys:
        statement = f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"
        _bounded(write, lambda conn, s=statement: run(conn, s), lock_timeout_ms, attempts)


def pg_drop_outside_keys_or_warn(
    write: Write,
    read: Callable[[sa.Connection], list[tuple[str, str, str]]],
    projection: str,
    *,
    lock_timeout_ms: int,
    attempts: int,
) -> None:
    """:func:`pg_drop_outside_keys` on the way out of a failed rebuild: a failure to is
    logged, not raised (the replay's own error is the one to tell)."""
    try:
        pg_drop_outside_keys(write, read, lock_timeout_ms=lock_timeout_ms, attempts=attempts)
    except Exception as exc:  # noqa: BLE001
        logger.warning(
            "a failed rebuild left foreign keys on its shadow",
            projection=projection,
            detail=f"{describe_db_error(exc)}: deletes on the tables they reference may be "
            f"refused until `readmodel replay {projection} --cleanup` runs",
        )
