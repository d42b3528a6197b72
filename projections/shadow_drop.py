"""Dropping the tables a blue/green rebuild is done with, under a bounded lock wait: the old
tables after the swap, and what an interrupted replay left (its shadows, old tables).

``DROP TABLE`` takes ACCESS EXCLUSIVE on the table and on every table its foreign keys
reference. Behind an application's open transaction on one of those (a read is enough) it
would wait without limit, and every later query of that table would queue behind it. So a
drop waits at most ``lock_timeout``, a few times with a back-off, and then says which table
it waited for and who held it (:mod:`outbox.migrate_locks`: :class:`LockWatch`,
:func:`holders`).

After the swap (:func:`drop_old_tables`) the live model is already the new one: an old
table that cannot be dropped is left, named ``<table>__old`` as the swap renamed it, and
emptied (``TRUNCATE`` locks it alone; its hand-made triggers, the live table's, are
disabled first; not when a publication of all tables or of its schema still covers it), so
that its foreign keys hold up no delete on the
tables they reference; a warning names it and the lock it waited for, and the next replay
or ``readmodel replay PROJECTION --cleanup`` drops it (:func:`drop_leftovers`), found by the
mark the swap gave it (:mod:`projections.shadow_leftovers`): never a table merely named so. When it
cannot either, ``--cleanup`` refuses, naming the holders; a replay goes on: its swap renames
the old table ``<table>__old_<oid>`` (the name it needs is free again) and drops it after,
with its own.
"""

from __future__ import annotations

import re
import time

import psycopg
import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error
from outbox.errors import StoreError
from outbox.migrate_locks import LockWatch, lock_blocked
from projections.shadow import drop_tables
from projections.shadow_blocked import Blocked, blocked_on
from projections.shadow_names import OLD_SUFFIX, run

logger = structlog.get_logger("readmodel.replay")

_REFERENCED = """
SELECT DISTINCT k.confrelid::regclass::text FROM pg_constraint k
 WHERE k.contype = 'f' AND k.conrelid = ANY(%(tables)s::regclass[])
   AND k.confrelid <> ALL(%(tables)s::regclass[])
 ORDER BY 1
"""


def drop_bounded(
    engine: sa.Engine, names: list[str], *, lock_timeout_ms: int, attempts: int
) -> Blocked | None:
    """Drop the tables ``names`` (SQL names, one statement), waiting at most the server's
    ``deadlock_timeout`` and ``lock_timeout_ms`` more for their locks, ``attempts`` times at
    most: ``None`` once dropped, else what blocked the last attempt. Errors other than a
    lock wait given up are raised.

    An autovacuum that holds a lock the drop waits for is cancelled by PostgreSQL only once
    the drop waited ``deadlock_timeout``: a shorter wait would give up on each one."""
    blocked: Blocked | None = None
    for attempt in range(1, attempts + 1):
        watch: LockWatch | None = None
        wait: int | None = None
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    wait = int(lock_timeout_ms) + _deadlock_timeout_ms(conn)
                    run(conn, f"SET LOCAL lock_timeout = {wait}")
                with LockWatch(engine, conn) as watch:
                    drop_tables(conn, names)
            return None
        except (SQLAlchemyError, psycopg.Error) as exc:
            kind = lock_blocked(exc)
            if kind is None:
                raise
            seen = watch is not None and watch.table is not None
            candidates = [] if seen else _locked_by_drop(engine, names)
            blocked = blocked_on(engine, kind, watch, candidates, wait)
            if attempt < attempts:
                logger.warning("replay drop retried", tables=names, blocked=blocked.describe())
                time.sleep(0.2 * attempt)
    return blocked


def drop_old_tables(
    engine: sa.Engine, names: list[str], projection: str, *, lock_timeout_ms: int, attempts: int
) -> str | None:
    """Drop the old tables after the swap's commit: ``None`` once done, else why they are
    left (emptied, for the next replay or ``--cleanup`` to drop). Never raises: the swap is
    done, the live model is the new one."""
    if not names:
        return None
    try:
        blocked = drop_bounded(engine, names, lock_timeout_ms=lock_timeout_ms, attempts=attempts)
    except (SQLAlchemyError, psycopg.Error) as exc:
        why = f"the drop failed: {describe_db_error(exc)}"
    else:
        if blocked is None:
            return None
        why = f"the drop gave up ({blocked.describe()})"
    published = _published(engine, names)
    emptied = not published and _empty(engine, names, lock_timeout_ms)
    state = "emptied"
    if not emptied:
        state = "not emptied: they still hold their rows"
        if published:  # its rows' removal would be replicated, to subscribers without it
            state += f" (publication {', '.join(published)} still covers them)"
        referenced = _referenced(engine, names)
        if referenced:
            state += f"; deletes on {', '.join(referenced)} that they reference are refused"
    logger.warning(
        "replay left its old tables",
        projection=projection,
        tables=names,
        why=why,
        emptied=emptied,
        detail=f"the swap is done; the next replay or `readmodel replay {projection} "
        f"--cleanup` drops them",
    )
    return f"{why}; {state}"


def drop_leftovers(
    engine: sa.Engine,
    names: list[str],
    projection: str,
    refuse: bool = True,
    *,
    lock_timeout_ms: int,
    attempts: int,
) -> None:
    """Drop what an earlier replay left; a :class:`StoreError` naming the lock and its
    holders when it cannot within the bound. Unless ``refuse``, the shadows are dropped
    apart and old tables still held are left (with a warning) instead."""
    if not names:
        return
    olds = [name for name in names if _is_old(name)]
    if not refuse and olds:
        drop_leftovers(
            engine,
            [n for n in names if n not in olds],
            projection,
            lock_timeout_ms=lock_timeout_ms,
            attempts=attempts,
        )
        try:
            blocked = drop_bounded(engine, olds, lock_timeout_ms=lock_timeout_ms, attempts=attempts)
        except (SQLAlchemyError, psycopg.Error) as exc:
            why = describe_db_error(exc)
        else:
            if blocked is None:
                return
            why = blocked.describe()
        logger.warning(
            "replay left old tables of an earlier replay",
            projection=projection,
            tables=olds,
            why=why,
            detail="the swap renames them and drops them after it",
        )
        return
    try:
        blocked = drop_bounded(engine, names, lock_timeout_ms=lock_timeout_ms, attempts=attempts)
    except (SQLAlchemyError, psycopg.Error) as exc:
        raise StoreError(
            f"{projection}: cannot drop {', '.join(names)}: {describe_db_error(exc)}"
        ) from exc
    if blocked is not None:  # not chained: a lock wait given up is no unreachable database
        raise StoreError(
            f"{projection}: cannot drop {', '.join(names)}, left by an earlier replay: "
            f"{blocked.describe()}; try again once it is released"
        )


def _is_old(name: str) -> bool:
    """Whether ``name`` (SQL) is an old table's, not a shadow's."""
    last = name.rsplit(".", 1)[-1].strip('"')
    return last.endswith(OLD_SUFFIX) or re.search(f"{OLD_SUFFIX}_[0-9]+$", last) is not None


def _deadlock_timeout_ms(conn: sa.Connection) -> int:
    """This session's ``deadlock_timeout``, in milliseconds."""
    found = conn.exec_driver_sql(
        "SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'"
    ).scalar()
    return int(found or 0)


def _locked_by_drop(engine: sa.Engine, names: list[str]) -> list[str]:
    """The tables outside ``names`` that their foreign keys reference, then ``names`` (as
    ``regclass`` names them: schema-qualified outside the search path)."""
    if engine.dialect.name != "postgresql":
        return []
    try:
        with engine.connect() as conn:
            present = [
                str(found)
                for found in (
                    conn.exec_driver_sql("SELECT to_regclass(%(t)s)::text", {"t": name}).scalar()
                    for name in names
                )
                if found is not None
            ]
            if not present:
                return []
            referenced = conn.exec_driver_sql(_REFERENCED, {"tables": present}).scalars().all()
            own = (
                conn.exec_driver_sql(
                    "SELECT oid::regclass::text FROM pg_class "
                    "WHERE oid = ANY(%(tables)s::regclass[])",
                    {"tables": present},
                )
                .scalars()
                .all()
            )
            return [str(name) for name in [*referenced, *own]]
    except SQLAlchemyError:
        return []


def _empty(engine: sa.Engine, names: list[str], lock_timeout_ms: int) -> bool:
    """``TRUNCATE`` the tables (it locks them only, not the tables they reference), their
    hand-made triggers disabled first: they are the live table's, kept by the rename, and an
    ``ON TRUNCATE`` one would act on what the live table keeps in step (a drop fires none)."""
    if engine.dialect.name != "postgresql":
        return False
    try:
        with engine.begin() as conn:
            wait = int(lock_timeout_ms) + _deadlock_timeout_ms(conn)  # as a drop's
            run(conn, f"SET LOCAL lock_timeout = {wait}")
            for name in names:
                run(conn, f"ALTER TABLE {name} DISABLE TRIGGER USER")
            run(conn, f"TRUNCATE {', '.join(names)}")
    except SQLAlchemyError as exc:
        logger.warning("replay could not empty its old tables", error=describe_db_error(exc))
        return False
    return True


_PUBLISHED = """
SELECT DISTINCT t.pubname FROM pg_publication_tables t
  JOIN pg_namespace n ON n.nspname = t.schemaname
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
 WHERE c.oid = ANY(%(tables)s::regclass[])
 ORDER BY 1
"""


def _published(engine: sa.Engine, names: list[str]) -> list[str]:
    """The publications that still cover one of the tables after the swap took them out of
    those listing them (``FOR ALL TABLES``, ``TABLES IN SCHEMA``): their ``TRUNCATE`` would
    be published."""
    if engine.dialect.name != "postgresql":
        return []
    try:
        with engine.connect() as conn:
            found = conn.exec_driver_sql(_PUBLISHED, {"tables": names}).scalars()
            return [str(name) for name in found]
    except SQLAlchemyError as exc:  # unknown: not emptied, rather than published
        return [f"(unread: {describe_db_error(exc)})"]


def _referenced(engine: sa.Engine, names: list[str]) -> list[str]:
    """The tables outside ``names`` that their foreign keys reference."""
    if engine.dialect.name != "postgresql":
        return []
    try:
        with engine.connect() as conn:
            found = conn.exec_driver_sql(_REFERENCED, {"tables": names}).scalars()
            return [str(name) for name in found]
    except SQLAlchemyError:
        return []
