"""How a document store's transaction holds what a handler writes and reads by: a document as
BSON stores it (what a later batch reads back), a key as the server finds it, and the refusal,
at the call, of a value BSON cannot hold, naming the collection, the field and the value's
type, never the value (a refusal is logged and kept as a parked event's reason)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument

from projections.api import UnstorableValueError, WideIntegerError
from projections.document_refusals import unsent_reason

__all__ = [
    "as_stored",
    "refuse_wide_integer",
    "slot",
    "wide_integer_field",
]

_INT64 = 2**63


def wide_integer_field(value: Any, path: str) -> tuple[str, int] | None:
    """``(dotted path, value)`` of the first integer past 64 bits in ``value``, or ``None``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (path, value) if not -_INT64 <= value < _INT64 else None
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = wide_integer_field(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def unencodable_field(value: Any, path: str, options: CodecOptions[Any]) -> str | None:
    """The dotted path of the first field in ``value`` BSON cannot encode (a mapping with a
    key that is no string, or with a NUL in one: the mapping's), or ``None``."""
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str) or "\x00" in key:
                return path or None
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        try:
            bson.encode({"v": value}, codec_options=options)
        except Exception:
            return path
        return None
    for key, item in items:
        found = unencodable_field(item, f"{path}.{key}" if path else str(key), options)
        if found is not None:
            return found
    return None


def refuse_wide_integer(collection: str, what: str, value: Any, path: str = "_id") -> None:
    """:class:`WideIntegerError` naming ``collection``, the field and the integer's size (not
    the integer: a refusal is logged and kept as a parked reason), when ``value``
    (a key, a filter's value) holds an integer past 64 bits: no document holds one, and the
    driver's refusal (``OverflowError``) names neither."""
    if type(value) is str:
        return
    found = wide_integer_field(value, path)
    if found is not None:
        raise WideIntegerError(
            f"{collection!r}: {what} holds an integer in {found[0]!r} past the 64-bit "
            "integers BSON holds: write it as text, or as a Decimal128"
        )


_PLAIN_KEYS = frozenset({str, int, float, bool, ObjectId})
_KEY_OPTIONS: CodecOptions[Any] = CodecOptions(tz_aware=True)


def slot(key: Any) -> Any:
    """``key`` as a dict key: typed (``True`` is not ``1`` to MongoDB), and a compound
    ``_id`` (a document) by its BSON bytes. Any other key as BSON holds it, so keys the
    server finds alike are alike here (a tuple and a list, an ``IntEnum`` and an ``int``, an
    ``Int64`` and an ``int``, a datetime and the same millisecond in UTC)."""
    if type(key) in _PLAIN_KEYS:
        return (type(key), key)
    try:
        key = bson.decode(bson.encode({"k": key}, codec_options=_KEY_OPTIONS), _KEY_OPTIONS)["k"]
    except (InvalidDocument, ValueError, OverflowError):
        pass  # the server's refusal is the call's
    if isinstance(key, int) and not isinstance(key, bool):
        return (int, int(key))
    try:
        hash(key)
    except TypeError:
        return ("bson", bson.encode({"k": key}))
    return (type(key), key)


def as_stored(
    collection: str, document: Mapping[str, Any], options: CodecOptions[Any]
) -> dict[str, Any]:
    """``document`` as BSON stores it, read back as the client reads it (``options``, its
    codec options): what a later batch's ``get`` answers, so this batch's answers the same (a
    tuple is a list, a datetime is UTC to the millisecond, an ``IntEnum`` an ``int``, a
    ``Binary`` of subtype 0 ``bytes``...). A value BSON cannot hold is refused here, before
    the batch holds it: :class:`UnstorableValueError` (:class:`WideIntegerError` for an
    integer past 64 bits) naming the collection, the ``_id``, the field and the value's type,
    never the value."""
    try:  # nested: the fields in their order (a top-level document's _id is moved first)
        data = bson.encode({"d": document}, codec_options=options)
    except OverflowError as exc:
        found = wide_integer_field(document, "")
        if found is None:
            raise UnstorableValueError(
                f"{where(collection, document, None)}: {unsent_reason(exc)}"
            ) from None
        raise WideIntegerError(
            f"{where(collection, document, found[0])} holds an integer past the "
            "64-bit integers BSON holds: write it as text, or as a Decimal128"
        ) from None
    except (InvalidDocument, ValueError) as exc:  # UnicodeEncodeError among them
        # Not from exc: its message (kept in the traceback) may quote the value.
        field = unencodable_field(document, "", options)
        raise UnstorableValueError(
            f"{where(collection, document, field)}: {unsent_reason(exc)}"
        ) from None
    stored: dict[str, Any] = bson.decode(data, codec_options=options)["d"]
    return stored


def where(collection: str, document: Mapping[str, Any], field: str | None) -> str:
    """``'collection' document with _id 'k': field 'f'``; the ``_id`` unshown when the
    refused value is in it."""
    if field is not None and (field == "_id" or field.startswith("_id.")):
        return f"{collection!r} document, in its _id ({field!r})"
    text = f"{collection!r} document with _id {document['_id']!r}"
    return text if field is None else f"{text}: field {field!r}"
