"""What the document store tells of a write the driver or the server refused, without the
values written: pymongo quotes the value it cannot encode (``cannot encode object: {...}, of
type: <class 'set'>``), a mapping's key that is no string, and a bulk write's error holds
the whole document (``op``) and the duplicate key's value (``keyValue``, ``dup key: {...}``).
Such a message is logged and kept as the parked event's reason and traceback."""

from __future__ import annotations

from bson.errors import BSONError
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from outbox.mongo_connection import (
    describe_mongo_error,
    message_without_values,
    unencodable_kind,
)

__all__ = ["error_without_values", "unsent_reason", "without_values"]

_KEPT = ("index", "code", "codeName", "keyPattern")  # names of the schema, not values


def unsent_reason(exc: BaseException) -> str:
    """Why the driver cannot send a document (``exc``: its refusal), with the type of the
    value it cannot encode, never the value nor a key."""
    text = str(exc)
    if kind := unencodable_kind(text):
        why = f"BSON cannot encode a value of type {kind}"
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


def error_without_values(exc: BaseException) -> BaseException:
    """A MongoDB or BSON error of ``exc``'s class, still classified as ``exc`` is, whose
    message is :func:`describe_mongo_error`'s (the index a duplicate key names, the code;
    not the key's value nor the document pymongo appends); a bulk write's as
    :func:`without_values` keeps it. Any other error as it is: raised by a handler's own
    code, it is logged and kept as the parked reason."""
    if isinstance(exc, BulkWriteError):
        return without_values(exc)
    if not isinstance(exc, PyMongoError | BSONError):
        return exc
    told = describe_mongo_error(exc)
    message = told.partition(": ")[2]
    try:
        if isinstance(exc, OperationFailure):
            return type(exc)(message, exc.code)
        return type(exc)(message)
    except Exception:  # a class that does not take its message alone
        return RuntimeError(told)
