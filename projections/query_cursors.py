"""The opaque cursors of keyset pages: made for one list (projection, table or collection,
filters, tenant), holding the last key of a page.

Separate from the SQL reader (:mod:`projections.query_reader`): the document reader's
lists use the same cursors, with its own key encoding.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import sqlalchemy as sa

from projections.query_errors import QueryError
from projections.query_values import coerce


def list_fingerprint(
    projection: str, listed: str, where: Mapping[str, Any], tenant: str | None
) -> str:
    """What a list's cursors are made for: the projection, the table or collection listed
    (whose key orders it), the filters (each value by its ``str``: where ``5`` and ``"5"``
    are different filters, the caller passes them typed, e.g. by ``repr``) and the tenant."""
    scope = {} if tenant is None else {"\x00tenant": tenant}
    fields = sorted((k, str(v)) for k, v in {**where, **scope}.items())
    return hashlib.blake2s(orjson.dumps([projection, listed, fields]), digest_size=6).hexdigest()


def encode_cursor(key: Any, fingerprint: str, dumps: Callable[[Any], bytes] = orjson.dumps) -> str:
    """The opaque cursor of the page after ``key``, for the list of ``fingerprint``
    (``dumps``: how the key is written, JSON for a table's)."""
    raw = dumps({"k": key, "f": fingerprint})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_key(
    cursor: str,
    fingerprint: str,
    loads: Callable[[bytes], Any] = orjson.loads,
    valid: Callable[[Any], bool] = lambda key: True,
) -> Any:
    """The key ``cursor`` holds; :class:`QueryError` unless it is one (``loads`` raises
    ``ValueError`` for what it cannot read; ``valid`` says whether a key is of the list's
    kind) that the list of ``fingerprint`` made."""
    try:
        data = loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key, made_for = data["k"], data["f"]
    except (ValueError, TypeError, KeyError):
        key, made_for = None, None
    if made_for is None or not valid(key):
        raise QueryError(f"cursor {cursor!r} is not a cursor this query returned")
    if made_for != fingerprint:
        raise _another_list(cursor)
    return key


def _another_list(cursor: str) -> QueryError:
    return QueryError(
        f"cursor {cursor!r} belongs to another list (other projection, table or collection, "
        f"filters or tenant)"
    )


def decode_cursor(cursor: str, fingerprint: str, pk: list[sa.Column[Any]]) -> tuple[Any, ...]:
    """The primary key a table's cursor holds, as the columns' types."""
    key = cursor_key(cursor, fingerprint, valid=_key_list)
    if len(key) != len(pk):
        raise _another_list(cursor)
    return tuple(coerce(c, v) if isinstance(v, str) else v for c, v in zip(pk, key, strict=True))


def _key_list(key: Any) -> bool:
    return isinstance(key, list) and all(v is None or type(v) in (str, int, float) for v in key)
