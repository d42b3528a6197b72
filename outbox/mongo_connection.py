"""Connecting to MongoDB: a client with readmodel's timeouts and datetime handling, the
database a URL names, and driver errors as one line with secrets masked."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote

from pymongo import MongoClient

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
    """One line for a driver error, secrets masked, without the driver's topology dump."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    message = _TOPOLOGY.sub("", message.split(", Topology Description:")[0])
    return redact_text(f"{type(exc).__name__}: {message}"[:300])


_TOPOLOGY = re.compile(r" \(configured timeouts: [^)]*\)")
