"""What a query is checked against before it reads: a declared query's arguments, bound and
converted to its annotations, and a list's filters, against the table's indexes."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError

from projections.api import Projection
from projections.queries import QuerySpec
from projections.query_errors import QueryError
from projections.query_values import plain_value


def indexes(table: sa.Table) -> list[list[str]]:
    """The column lists of the table's indexes (primary key, unique, ``Index``)."""
    out = [[c.name for c in table.primary_key.columns]]
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            out.append([c.name for c in constraint.columns])
    for index in table.indexes:
        out.append([c.name for c in index.columns if isinstance(c, sa.Column)])
    return [cols for cols in out if cols]


def check_indexed(table: sa.Table, where: Mapping[str, Any], scoped: str | None = None) -> None:
    """Refuse a filter on a column outside every index led by one of the filtered columns,
    or by ``scoped``, the tenant column a tenant read filters on as well."""
    found = indexes(table)
    usable = [cols for cols in found if cols[0] in where or cols[0] == scoped]
    covered = {name for cols in usable for name in cols}
    missing = [name for name in where if name not in covered]
    if missing:
        leading = sorted({cols[0] for cols in found})
        raise QueryError(
            f"table {table.name!r}: column {missing[0]!r} is not indexed "
            f"(indexed: {', '.join(leading)}); filter on an indexed column, add an index, "
            f"or allow a scan explicitly (allow_unindexed / --allow-unindexed)"
        )


def bind_arguments(
    p: Projection, spec: QuerySpec, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> inspect.BoundArguments:
    """The query's arguments, converted to its annotations (``"42"`` -> ``42``); a
    :class:`JsonValue` (``--where name:=JSON``) as its plain value (:func:`plain_value`)."""
    signature = inspect.Signature(list(spec.parameters))
    args = [plain_value(value) for value in args]
    kwargs = {name: plain_value(value) for name, value in kwargs.items()}
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise QueryError(f"query {p.name}.{spec.name}({spec.signature}): {exc}") from None
    try:
        hints = typing.get_type_hints(spec.function, globalns=vars(inspect.getmodule(p)))
    except Exception:
        hints = {}
    for name, value in bound.arguments.items():
        hint = hints.get(name)
        if hint is None or hint is Any:
            continue
        try:
            bound.arguments[name] = TypeAdapter(hint).validate_python(value)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]["msg"]
            raise QueryError(
                f"query {p.name}.{spec.name}: argument {name!r}={value!r}: {problem}"
            ) from None
    return bound
