"""The compiled key conversion of :class:`projections.sql_values.Converters`: a key already of
its columns' types (a text key given as text, an integer one as an int) is returned as it is,
after one type test per converted column, for every ``tx.get`` and ``tx.upsert`` pays it.

A key looked up (``lookup=True``: ``get``, ``prefetch``, ``delete``) that no row can have, an
integer outside its column's bounds, is ``None``: it finds no row, and is not sent to the
database (which refuses it without naming the column, and PostgreSQL aborts the
transaction).

A NaN key (a float column's, given as a ``float``) takes the converted path too: each
``float('nan')`` is its own dict key (NaN equals nothing, and hashes by identity), so a row
upserted with one was not found by ``get`` with another in its batch, as it is in a later
one (PostgreSQL's NaN equals NaN)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from projections.sql_values import Column

__all__ = ["compile_key"]

_NONE = type(None)


def compile_key(
    keys: tuple[Column | None, ...] | None,
    converted: Callable[[tuple[Any, ...], bool], tuple[Any, ...] | None],
) -> Callable[..., tuple[Any, ...] | None]:
    """``key(key, lookup=False)``: ``key`` itself when no value of it needs converting (a type
    test per converted column, as ``normalize``'s), else ``converted(key, lookup)``; looked
    up, ``None`` for a key no row can have (``converted`` returns ``None`` for one too)."""
    if keys is None:
        return converted  # type: ignore[return-value]
    names: dict[str, Any] = {"_type": type, "_int": int, "_converted": converted}
    values = [f"v{i}" for i in range(len(keys))]
    tests, outside = [], []
    for i, column in enumerate(keys):
        if column is None:
            continue
        if column.bounds is not None:
            names |= {f"low{i}": column.bounds.low, f"high{i}": column.bounds.high}
            outside.append(f"(_type(v{i}) is _int and (v{i} > high{i} or v{i} < low{i}))")
        if column.convert is None:
            continue
        kinds = []
        for j, kind in enumerate(kind for kind in column.exact if kind is not _NONE):
            names[f"kind{i}_{j}"] = kind
            kinds.append(f"_type(v{i}) is not kind{i}_{j}")
        tests.append(f"({' and '.join([*kinds, f'v{i} is not None'])})")
        if float in column.exact:  # NaN: one object (see sql_values.same_nan)
            tests.append(f"v{i} != v{i}")
    unpack = f"{', '.join(values)}, = key"
    body = ["    def key(key, lookup=False):", f"        {unpack}"]
    if tests:
        body += [f"        if {' or '.join(tests)}:", "            key = _converted(key, lookup)"]
        if outside:
            body += ["            if key is None:", "                return None"]
            body += ["            if lookup:", f"                {unpack}"]
    if outside:
        body += [f"        if lookup and ({' or '.join(outside)}):", "            return None"]
    body.append("        return key")
    source = "\n".join([f"def make({', '.join(names)}):", *body, "    return key"])
    scope: dict[str, Any] = {}
    exec(source, scope)  # noqa: S102 - code built from the key's column count
    return scope["make"](**names)  # type: ignore[no-any-return]
