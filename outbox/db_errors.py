"""A database's refusal told without the values it refused.

PostgreSQL quotes the value it refuses in a data exception's message (``invalid input
syntax for type inet: "..."``, ``value "..." is out of range for type integer``) and the
row's values in an integrity error's DETAIL (``Key (email)=(...) already exists``,
``Failing row contains (...)``); MySQL and MariaDB in the message itself (``Duplicate entry
'...' for key 'email'``); SQLAlchemy adds the statement's parameters. Such a message would be
logged and kept as a parked event's reason: a password written to the wrong column with it.
:func:`hidden_message` keeps what says why (the SQLSTATE or error code, the primary message
with the value replaced by ``(value hidden)``, the names of the constraint, table and
column), and drops the rest.
"""

from __future__ import annotations

import re
import sqlite3
import traceback

import psycopg
import pymysql
import sqlalchemy as sa
from bson.errors import BSONError
from pymongo.errors import PyMongoError

__all__ = [
    "BIND_HIDDEN",
    "HIDDEN",
    "db_error",
    "hidden_message",
    "hidden_traceback",
    "without_values",
]

HIDDEN = "(value hidden)"
BIND_HIDDEN = "binding a value failed (its message hidden: it may quote the value)"

# A data exception's bytes of an encoding it cannot read: "invalid byte sequence for
# encoding "UTF8": 0xe9 0x80".
_BYTES = re.compile(r"0x[0-9a-fA-F]{2}(?:\s+0x[0-9a-fA-F]{2})*")
# MySQL / MariaDB errors quoting the value refused, and the text that comes before it:
# 1062 "Duplicate entry '...' for key 'email'", 1366 / 1292 "Incorrect integer value: '...'
# for column ...", 1411 "Incorrect datetime value: '...' for function str_to_date" (1265
# "Data truncated for column 'c'" and 1048 "Column 'c' cannot be null" quote no value).
_MYSQL_VALUE = re.compile(
    r"(?P<before>(?:entry|value:?) )'.*'(?P<after> for (?:key|column|function) )"
)
_MYSQL_HIDDEN = rf"\g<before>'{HIDDEN}'\g<after>"


def db_error(exc: BaseException) -> BaseException:
    """The driver's error under SQLAlchemy's (which adds the statement and its parameters)."""
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        return exc.orig
    return exc


def hidden_message(exc: BaseException) -> str:
    """``exc``'s message (a driver error's, SQLAlchemy's own unwrapped) on one line, without
    the values it quotes: PostgreSQL's primary message with any quoted value of a data
    exception (SQLSTATE class 22) replaced by ``"(value hidden)"``, followed by its SQLSTATE
    and the constraint, table and column it names (no DETAIL, HINT or CONTEXT, which quote
    the row); MySQL's with the value it quotes replaced; a bind processor's under SQLAlchemy's
    (``float()`` of an object) none; others' first line."""
    if _bind_error(exc):
        return BIND_HIDDEN
    exc = db_error(exc)
    if isinstance(exc, psycopg.Error):
        return _postgresql(exc)
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) == 2:
        code, message = exc.args
        return f"({code}) {_MYSQL_VALUE.sub(_MYSQL_HIDDEN, str(message))}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def without_values(exc: BaseException) -> BaseException:
    """A driver error of ``exc``'s class (SQLAlchemy's unwrapped) whose message is
    :func:`hidden_message`'s: kept as a failure's error (its repr is logged and parked), and
    still classified as ``exc`` is (``isinstance``, a SQLSTATE). Any other error as it is."""
    orig = db_error(exc)
    if _bind_error(exc):  # still a ValueError (say), which the store takes for a refusal
        try:
            return type(orig)(BIND_HIDDEN)
        except Exception:
            return ValueError(BIND_HIDDEN)
    if isinstance(orig, psycopg.Error | sqlite3.Error):
        try:
            return type(orig)(hidden_message(orig))
        except Exception:  # a class that does not take its message alone
            return RuntimeError(f"{type(orig).__name__}: {hidden_message(orig)}")
    if isinstance(orig, pymysql.MySQLError) and len(orig.args) == 2:
        return type(orig)(orig.args[0], hidden_message(orig).split(") ", 1)[1])
    return orig if orig is not exc and isinstance(exc, sa.exc.StatementError) else exc


def hidden_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` and of the exceptions it was raised from or while handling,
    as kept with a parked or skipped event, each database error told by
    :func:`hidden_message` (SQLAlchemy's too, which shows the statement's parameters), and
    so is one an exception carries as its ``error`` (whose message is its repr: a batch's
    refused writes). A MongoDB or BSON error is told without the values it quotes
    (``dup key: {...}``, ``full error: {...}``), as ``describe_mongo_error`` tells it."""
    chain: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and all(error is not e for e in chain):
        chain.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    bound = [e.orig for e in chain if _bind_error(e)]  # told by SQLAlchemy's error
    parts: list[str] = []
    for error in reversed(chain):
        if parts:
            parts.append("\nwhich was followed by:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts += traceback.format_tb(error.__traceback__)
        carried = getattr(error, "error", None)  # a refusal carrying the driver's error
        if any(error is e for e in bound):
            parts.append(f"{type(error).__name__}: {BIND_HIDDEN}\n")
        elif isinstance(error, _DB_ERRORS):
            parts.append(f"{type(error).__name__}: {hidden_message(error)}\n")
        elif isinstance(error, _MONGO_ERRORS):
            parts.append(f"{_mongo_line(error)}\n")
        elif isinstance(carried, _DB_ERRORS):  # its message: the error's repr
            parts.append(f"{type(error).__name__}: {without_values(carried)!r}\n")
        else:
            parts += traceback.format_exception_only(error)
    return "".join(parts)


_DB_ERRORS = (psycopg.Error, sqlite3.Error, pymysql.MySQLError, sa.exc.SQLAlchemyError)
_DRIVER_ERRORS = (psycopg.Error, sqlite3.Error, pymysql.MySQLError)
_MONGO_ERRORS = (PyMongoError, BSONError)


def _mongo_line(exc: BaseException) -> str:
    """A MongoDB or BSON error as ``describe_mongo_error`` tells it: no value it quotes."""
    from outbox.mongo_connection import describe_mongo_error  # it imports outbox.db, ours

    return describe_mongo_error(exc)


def _bind_error(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLAlchemy's error around one of a bind processor (``float()`` of
    a value, a JSON serializer's...), not the driver's: its message is the value's to say."""
    return (
        isinstance(exc, sa.exc.StatementError)
        and exc.orig is not None
        and not isinstance(exc.orig, _DRIVER_ERRORS)
    )


def _postgresql(exc: psycopg.Error) -> str:
    diag = exc.diag
    primary = diag.message_primary
    if primary is None:  # raised by psycopg itself, or built from a message
        text = str(exc).strip()
        primary = text.splitlines()[0] if text else type(exc).__name__
    sqlstate = exc.sqlstate
    if sqlstate is not None and sqlstate.startswith("22"):
        primary = _hide_quoted(primary)
    names = [
        f"{what} {name}"
        for what, name in (
            ("constraint", diag.constraint_name),
            ("table", diag.table_name),
            ("column", diag.column_name),
        )
        if name
    ]
    if sqlstate is None and not names or f"(SQLSTATE {sqlstate}" in primary:
        return primary  # or told already: an error :func:`without_values` made
    said = "; ".join(([f"SQLSTATE {sqlstate}"] if sqlstate else []) + names)
    return f"{primary} ({said})"


def _hide_quoted(text: str) -> str:
    """``text`` with what it quotes replaced, from the first double quote to the last (the
    value may hold quotes itself), and bytes it shows in hexadecimal."""
    first = text.find('"')
    if first != -1:
        last = text.rfind('"')
        end = len(text) if last == first else last + 1
        text = f'{text[:first]}"{HIDDEN}"{text[end:]}'
    return _BYTES.sub("(bytes hidden)", text)
