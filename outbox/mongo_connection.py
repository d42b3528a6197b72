"""Connecting to MongoDB: a client with readmodel's timeouts and datetime handling, the
database a URL names, and driver errors as one line with secrets masked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

from bson.errors import BSONError
from pymongo import MongoClient
from pymongo.errors import BulkWriteError, ClientBulkWriteException, OperationFailure

from outbox.db import redact_text


def mongo_client(url: str) -> MongoClient[Any]:
    """A client with aware UTC datetimes that gives up on an unreachable server after a few
    seconds (unless the URL sets its own timeouts); nothing is connected until it is used."""
    given = {key.lower() for key in parse_qs(url.partition("?")[2])}
    timeouts = {
        "serverSelectionTimeoutMS": 5000,
        "connectTimeoutMS": 5000,
        "socketTimeoutMS": 30_000,
    }
    return MongoClient(
        url,
        tz_aware=True,
        datetime_conversion="DATETIME_AUTO",  # a date past year 9999 is read, then parked
        connect=False,
        **{key: value for key, value in timeouts.items() if key.lower() not in given},
    )


def mongo_database(url: str) -> str:
    """The database a ``mongodb://host/<database>`` URL names (config checks it is there)."""
    path = url.split("://", 1)[1].split("?", 1)[0]
    return unquote(path.split("/", 1)[1]) if "/" in path else ""


def describe_mongo_error(exc: BaseException) -> str:
    """One line for a driver error, secrets masked, without the driver's topology dump nor
    a value the server or the driver quotes (:func:`message_without_values`): a write's
    refusal keeps its code and the index it names, a bulk write's tells its first."""
    text = str(exc).strip()
    message = _TOPOLOGY.sub("", (text.splitlines()[0] if text else "").split(_DUMP)[0])
    if isinstance(exc, BulkWriteError | ClientBulkWriteException):
        message = _bulk(message_without_values(message), exc.details)
    elif isinstance(exc, OperationFailure):
        message = _with_code(message_without_values(message), exc)
    elif isinstance(exc, BSONError):
        message = _bson(message)
    else:
        message = message_without_values(message)
    return redact_text(f"{type(exc).__name__}: {message}"[:300])


def message_without_values(text: str) -> str:
    """``text``, a server's or driver's message, without what quotes values: a duplicate
    key's (``dup key: {...}``, always last), the document pymongo appends (``, full error:
    {...}``), and each ``{...}`` the server echoes (the document or key of ``Cannot create
    field 'f' in element {...}``), told as ``{...}``."""
    return _documents_hidden(text.split(" dup key:", 1)[0].split(", full error:", 1)[0])


def _documents_hidden(text: str) -> str:
    """``text`` with each outermost ``{...}`` as ``{...}`` (quotes within heeded; one left
    open hides the rest)."""
    kept: list[str] = []
    depth, quote, escaped = 0, "", False
    for char in text:
        if depth == 0:
            if char == "{":
                depth = 1
                kept.append("{...}")
            else:
                kept.append(char)
        elif escaped:
            escaped = False
        elif quote:
            escaped, quote = char == "\\", "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "{}":
            depth += 1 if char == "{" else -1
    return "".join(kept)


def _with_code(message: str, exc: OperationFailure) -> str:
    """``message`` with the server's code (and its name) unless it tells it (``E11000``)."""
    if exc.code is None or f"E{exc.code} " in message:
        return message
    name = exc.details.get("codeName") if isinstance(exc.details, Mapping) else None
    return f"{message} (code {exc.code}{f', {name}' if isinstance(name, str) else ''})"


def _bulk(message: str, details: Any) -> str:
    """A bulk write's error: how many writes failed and the first's message and code (not
    the ``op`` written, nor the duplicate key's ``keyValue``)."""
    details = details if isinstance(details, Mapping) else {}
    for field, what in (
        ("writeErrors", "write error"),
        ("writeConcernErrors", "write concern error"),
    ):
        errors = details.get(field) or []
        errors = list(errors.values()) if isinstance(errors, Mapping) else list(errors)
        if errors:
            first = errors[0] if isinstance(errors[0], Mapping) else {}
            text = message_without_values(str(first.get("errmsg", "")))
            code = first.get("code")
            if isinstance(code, int) and f"E{code} " not in text:
                text += f" (code {code})"
            plural = "" if len(errors) == 1 else "s"
            return f"{message}: {len(errors)} {what}{plural}, the first: {text}"
    return message


def unencodable_kind(text: str) -> str | None:
    """The type named by a driver's ``cannot encode object: ..., of type: <class 'set'>``
    (``set``), never the value it quotes; ``None`` for another message."""
    found = _UNENCODABLE.search(text)
    return found["kind"] if found else None


def _bson(message: str) -> str:
    """A BSON error without the value or key it quotes (``cannot encode object: {...}, of
    type: <class 'set'>``, ``key was 5``, ``'...' is not a valid ObjectId``)."""
    message = _UNENCODABLE.sub(r"cannot encode a value of type \g<kind>", message)
    message = _KEY.sub(r"a key must not \g<rule>", message.split(", key was ", 1)[0])
    return message_without_values(_NOT_AN_ID.sub("not a valid ObjectId", message))


_DUMP = ", Topology Description:"
_TOPOLOGY = re.compile(r" \(configured timeouts: [^)]*\)")
_UNENCODABLE = re.compile(r"cannot encode object: .*, of type: <class '(?P<kind>[^']*)'>", re.S)
_KEY = re.compile(r"key .* must not (?P<rule>start with '\$'|contain '\.')", re.S)
_NOT_AN_ID = re.compile(r"^.* is not a valid ObjectId", re.S)
