"""What the document store tells of a write the driver or the server refused, without the
values written: pymongo quotes the value it cannot encode (``cannot encode object: {...}, of
type: <class 'set'>``), a mapping's key that is no string, and a bulk write's error holds
the whole document (``op``) and the duplicate key's value (``keyValue``, ``dup key: {...}``).
Such a message is logged and kept as the parked event's reason and traceback."""

from __future__ import annotations

import re

from pymongo.errors import BulkWriteError

from outbox.mongo_connection import message_without_values

__all__ = ["unsent_reason", "without_values"]

_UNENCODABLE = re.compile(r"cannot encode object: .*, of type: <class '(?P<kind>[^']*)'>", re.S)
_KEPT = ("index", "code", "codeName", "keyPattern")  # names of the schema, not values


def unsent_reason(exc: BaseException) -> str:
    """Why the driver cannot send a document (``exc``: its refusal), with the type of the
    value it cannot encode, never the value nor a key."""
    text = str(exc)
    if found := _UNENCODABLE.search(text):
        why = f"BSON cannot encode a value of type {found['kind']}"
    elif "documents must have only string keys" in text:
        why = "documents must have only string keys"
    elif isinstance(exc, UnicodeError):
        why = "a string is not UTF-8, which documents hold"
    else:
        why = text.split(":", 1)[0]  # what follows may quote it
    return f"{type(exc).__name__}: {why}"


def without_values(exc: BulkWriteError) -> BulkWriteError:
    """A :class:`BulkWriteError` like ``exc`` (whose message is its details) holding of each
    write error its index, code and key pattern, and its message without the values it
    quotes (``E11000 duplicate key error collection: db.c index: email_1``)."""
    errors = []
    for error in exc.details.get("writeErrors") or []:
        kept = {name: error[name] for name in _KEPT if name in error}
        kept["errmsg"] = message_without_values(str(error.get("errmsg", "")))
        errors.append(kept)
    return BulkWriteError({"writeErrors": errors, "nInserted": exc.details.get("nInserted", 0)})
