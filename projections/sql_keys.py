"""The compiled key conversion of :class:`projections.sql_values.Converters`: a key already of
its columns' types (a text key given as text, an integer one as an int) is returned as it is,
after one type test per converted column, for every ``tx.get`` and ``tx.upsert`` pays it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from projections.sql_values import Column

__all__ = ["compile_key"]

_NONE = type(None)


def compile_key(
    keys: tuple[Column | None, ...] | None,
    converted: Callable[[tuple[Any, ...], bool], tuple[Any, ...]],
) -> Callable[..., tuple[Any, ...]]:
    """``key(key, lookup=False)``: ``key`` itself when no value of it needs converting (a type
    test per converted column, as ``normalize``'s), else ``converted(key, lookup)``."""
    if keys is None:
        return converted
    names: dict[str, Any] = {"_type": type, "_converted": converted}
    values = [f"v{i}" for i in range(len(keys))]
    tests = []
    for i, column in enumerate(keys):
        if column is None or column.convert is None:
            continue
        kinds = []
        for j, kind in enumerate(kind for kind in column.exact if kind is not _NONE):
            names[f"kind{i}_{j}"] = kind
            kinds.append(f"_type(v{i}) is not kind{i}_{j}")
        tests.append(f"({' and '.join([*kinds, f'v{i} is not None'])})")
    body = ["    def key(key, lookup=False):", f"        {', '.join(values)}, = key"]
    if tests:
        body += [f"        if {' or '.join(tests)}:", "            return _converted(key, lookup)"]
    body.append("        return key")
    source = "\n".join([f"def make({', '.join(names)}):", *body, "    return key"])
    scope: dict[str, Any] = {}
    exec(source, scope)  # noqa: S102 - code built from the key's column count
    return scope["make"](**names)  # type: ignore[no-any-return]
