"""A transaction whose COMMIT the connection was lost in raises :class:`CommitUncertain` (one
Ctrl-C stopped: :class:`CommitInterrupted`), so that a caller counting what it did
(``readmodel parked retry``, ``purge``) can report that work as unknown: the server may have
committed it before the connection went."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from outbox.db import describe_db_error
from outbox.errors import CommitInterrupted, CommitUncertain


@contextmanager
def begin_telling_commit(engine: sa.Engine, what: str) -> Iterator[sa.Connection]:
    """``engine.begin()``: the block's work committed on exit, rolled back on error; a lost
    connection at the commit raises :class:`CommitUncertain` naming ``what``, Ctrl-C there
    :class:`CommitInterrupted` (psycopg, interrupted waiting for the COMMIT's answer,
    cancels and raises the :class:`KeyboardInterrupt` whatever the server did)."""
    committing = False
    try:
        with engine.connect() as conn, conn.begin():
            yield conn
            committing = True  # the block is done: what fails now is the COMMIT
    except KeyboardInterrupt as exc:
        if committing and not isinstance(exc, CommitInterrupted):
            raise CommitInterrupted(what) from exc
        raise
    except (DBAPIError, psycopg.Error) as exc:
        if committing and _lost(exc):
            raise CommitUncertain(
                f"{what}: the connection was lost at the commit, which may or may not have "
                f"been done: {describe_db_error(exc)}"
            ) from exc
        raise


def _lost(exc: BaseException) -> bool:
    """A connection lost, not a refusal (a deferred constraint, a serialization failure:
    those roll back for sure): SQLAlchemy saw a disconnect, or the driver's error has no
    SQLSTATE or one of a connection lost or ended (08..., 57P...)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None) or exc
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state = orig.sqlstate
    return state is None or state.startswith(("08", "57P"))
