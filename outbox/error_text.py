"""An error as a log line's ``error`` field tells it: one short line, no password, no SQL.

``repr(exc)`` is no such line: a database's error holds what the server quotes of the
refused row (PostgreSQL's ``DETAIL:  Failing row contains (...)``, MySQL's ``Duplicate entry
'...'``), SQLAlchemy's text the statement and its parameters, pika's and redis-py's nested
reprs of the socket error under them, MongoDB's the duplicate key and the whole document.
:func:`describe_error` tells a database's error as :func:`outbox.db.describe_db_error` does,
a server that cannot be reached by the reason (``connection refused``), any other error by
its type and text, passwords masked, cut at :data:`MAX_TEXT` characters."""

from __future__ import annotations

import sqlite3
import sys
from types import ModuleType

import psycopg
import pymysql
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error, redact_text

__all__ = ["MAX_TEXT", "connection_reason", "cut", "describe_error", "short_reason"]

MAX_TEXT = 200

_DB_ERRORS = (SQLAlchemyError, psycopg.Error, pymysql.MySQLError, sqlite3.Error)


def describe_error(exc: BaseException) -> str:
    """``exc`` in one line of at most :data:`MAX_TEXT` characters, for a log line."""
    reason = connection_reason(exc)
    if reason is not None:
        return reason
    if isinstance(exc, _DB_ERRORS):
        return cut(describe_db_error(exc))
    mongo, bson = _loaded("pymongo.errors"), _loaded("bson.errors")
    if (mongo is not None and isinstance(exc, mongo.PyMongoError)) or (
        bson is not None and isinstance(exc, bson.BSONError)
    ):
        from outbox.mongo_connection import describe_mongo_error

        return cut(describe_mongo_error(exc))
    lines = str(exc).strip().splitlines()
    return cut(redact_text(f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")))


def connection_reason(exc: BaseException) -> str | None:
    """A short reason when ``exc`` says a server (Redis, RabbitMQ, any socket) cannot be
    reached or answered no more, else ``None``: the innermost error's, not pika's chain."""
    pika = _loaded("pika.exceptions")
    workflow = _loaded("pika.adapters.utils.connection_workflow")
    if pika is not None and isinstance(exc, pika.ConnectionClosedByBroker):
        return short_reason(Exception(f"closed by the broker: {exc.reply_code} {exc.reply_text}"))
    if workflow is not None and isinstance(exc, workflow.AMQPConnectorStackTimeout):
        return "timeout during AMQP handshake"
    if (pika is not None and isinstance(exc, pika.AMQPConnectionError)) or (
        workflow is not None and isinstance(exc, workflow.AMQPConnectorException)
    ):
        found = [getattr(exc, "exception", None), *exc.args]  # a phase error's cause
        inner = next((a for a in found if isinstance(a, BaseException)), None)
        return (connection_reason(inner) if inner else None) or short_reason(exc)
    redis = _loaded("redis.exceptions")
    if redis is not None and isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return short_reason(exc)
    if isinstance(exc, OSError):
        return short_reason(exc)
    return None


def short_reason(exc: BaseException) -> str:
    """``exc``'s text alone, as a reason (``connection refused``): an OS error's own words
    (and the file it names), no ``[Errno N]``, no final period."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename is not None else "")
    else:
        text = str(exc).strip() or type(exc).__name__
    text = redact_text(" ".join(text.split()).rstrip("."))
    return cut(text[:1].lower() + text[1:] if text[1:2].islower() else text)


def cut(text: str) -> str:
    """``text`` cut to :data:`MAX_TEXT` characters, ``...`` marking the cut."""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _loaded(name: str) -> ModuleType | None:
    """The module ``name`` if imported: an error of its classes is raised only then."""
    return sys.modules.get(name)
