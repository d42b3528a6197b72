"""How a document store's transaction holds what a handler writes and reads by: a document as
BSON stores it (what a later batch reads back), a key as the server compares it, and the
refusal, at the call, of what the server would refuse at commit, naming the collection and
the field and the value's type, never the value (a refusal is logged and kept as a parked
event's reason)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import bson
from bson import Decimal128, ObjectId
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument

from projections.api import UnstorableValueError, WideIntegerError
from projections.document_refusals import unsent_reason

__all__ = [
    "as_stored",
    "refuse_unencodable",
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


_PLAIN_KEYS = frozenset({str, bool, ObjectId})
_NUMBERS = frozenset({int, float})
_KEY_OPTIONS: CodecOptions[Any] = CodecOptions(tz_aware=True)
_NUMBER = "number"


def _number(value: int | float | Decimal128) -> tuple[str, Any]:
    """A number as the server compares it: by value, whatever its type (``1``, ``1.0``,
    ``Int64(1)`` and ``Decimal128("1.00")`` are one), a float by its shortest repr
    (SecantusDB's rule: ``0.1`` is ``Decimal128("0.1")``), every NaN alike."""
    if isinstance(value, Decimal128):
        number = value.to_decimal()
    elif isinstance(value, float):
        number = Decimal(repr(value))
    else:  # equal, and hashed alike, to the Decimal of its value
        return (_NUMBER, int(value))
    return (_NUMBER, "NaN") if number.is_nan() else (_NUMBER, number)


def _compared(value: Any) -> Any:
    """``value`` (read back from BSON) as the server compares it inside a compound ``_id``:
    numbers by value, documents and lists field by field in their order."""
    if isinstance(value, int | float | Decimal128) and not isinstance(value, bool):
        return _number(value)
    if isinstance(value, Mapping):
        return ("document", tuple((name, _compared(item)) for name, item in value.items()))
    if isinstance(value, list):
        return ("list", tuple(_compared(item) for item in value))
    try:
        hash(value)
    except TypeError:
        return ("bson", bson.encode({"k": value}))
    return (type(value), value)


def refuse_unencodable(collection: str, what: str, value: Any, path: str) -> None:
    """:class:`UnstorableValueError` naming ``collection``, ``what`` the value is, its field
    and its type when BSON cannot hold ``value`` (a find's filter value): pymongo's refusal
    quotes the value."""
    if type(value) in _PLAIN_KEYS:
        return
    try:
        bson.encode({"k": value}, codec_options=_KEY_OPTIONS)
    except (InvalidDocument, ValueError) as exc:
        field = unencodable_field(value, path, _KEY_OPTIONS) or path
        raise UnstorableValueError(
            f"{collection!r}: {what} ({field!r}) cannot be compared: {unsent_reason(exc)}"
        ) from None


def slot(key: Any, collection: str = "", what: str = "a key") -> Any:
    """``key`` as a dict key, alike for the keys the server finds alike: typed (``True`` is
    not ``1`` to MongoDB), a number by its value (``1``, ``1.0``, ``Int64(1)``,
    ``Decimal128("1")`` are one ``_id``), a compound ``_id`` (a document) field by field
    with its numbers by value, a list (not a document's field) by its BSON bytes (the server
    keys it so: ``[1]`` is not ``[1.0]``), any other key as BSON holds it (a tuple and a list,
    an ``IntEnum`` and an ``int``, a datetime and the same millisecond in UTC).

    A key BSON cannot hold (a set, a ``Decimal``) is refused with
    :class:`UnstorableValueError` naming ``collection``, ``what`` the key is and the field
    and type, never the value (pymongo's refusal quotes it)."""
    if type(key) in _PLAIN_KEYS:
        return (type(key), key)
    if type(key) in _NUMBERS:
        return _number(key)
    try:
        key = bson.decode(bson.encode({"k": key}, codec_options=_KEY_OPTIONS), _KEY_OPTIONS)["k"]
    except OverflowError:
        pass  # an integer past 64 bits: refused before (refuse_wide_integer)
    except (InvalidDocument, ValueError) as exc:  # UnicodeEncodeError among them
        # Not from exc: its message (kept in the traceback) quotes the value.
        field = unencodable_field(key, "_id", _KEY_OPTIONS) or "_id"
        raise UnstorableValueError(
            f"{collection!r}: {what} ({field!r}) cannot be a key: {unsent_reason(exc)}"
        ) from None
    if isinstance(key, int | float | Decimal128) and not isinstance(key, bool):
        return _number(key)
    if isinstance(key, Mapping):
        return _compared(key)
    try:
        hash(key)
    except TypeError:
        return ("bson", bson.encode({"k": key}))
    return (type(key), key)


def as_stored(
    collection: str,
    document: Mapping[str, Any],
    options: CodecOptions[Any],
    max_size: int,
    added: int = 0,
) -> dict[str, Any]:
    """``document`` as BSON stores it, read back as the client reads it (``options``, its
    codec options): what a later batch's ``get`` answers, so this batch's answers the same (a
    tuple is a list, a datetime is UTC to the millisecond, an ``IntEnum`` an ``int``, a
    ``Binary`` of subtype 0 ``bytes``...).

    What the server would refuse at commit is refused here, before the batch holds it, with
    :class:`UnstorableValueError` naming the collection, the ``_id`` and the field: a value
    BSON cannot hold (and its type; :class:`WideIntegerError` for an integer past 64 bits),
    a top-level field name starting with ``$`` (refused in a replacement; nested ones and
    dotted names are stored as they are), a document past ``max_size`` bytes once the caller
    adds ``added`` bytes of fields (the tenant's), naming its size and the limit."""
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
    for name in document:
        if name.startswith("$"):
            raise UnstorableValueError(
                f"{where(collection, document, name)}: a document's top-level field name "
                "cannot start with '$' (MongoDB refuses it in a replacement): rename it, or "
                "nest it in another field"
            )
    size = len(data) - 8 + added  # {"d": document}: its length, type, name and end
    if size > max_size:
        raise UnstorableValueError(
            f"{where(collection, document, None)}: the document is {size} bytes as BSON, "
            f"past the {max_size} bytes a MongoDB document holds"
        )
    stored: dict[str, Any] = bson.decode(data, codec_options=options)["d"]
    return stored


def where(collection: str, document: Mapping[str, Any], field: str | None) -> str:
    """``'collection' document with _id 'k': field 'f'``; the ``_id`` unshown when the
    refused value is in it."""
    if field is not None and (field == "_id" or field.startswith("_id.")):
        return f"{collection!r} document, in its _id ({field!r})"
    text = f"{collection!r} document with _id {document['_id']!r}"
    return text if field is None else f"{text}: field {field!r}"
