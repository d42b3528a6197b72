"""Declaring a projection's read queries: ``@query`` methods and ``key_tags``.

Every projection table can be read without declaring anything: get by primary key
and list by an indexed column with cursor pagination (see :class:`projections.Queries`).
A projection adds the reads its callers need with ``@query``::

    import sqlalchemy as sa
    from projections import Projection, Reader, query

    products = sa.Table(
        "product_catalog", metadata,
        sa.Column("product_id", sa.Text, primary_key=True),
        sa.Column("slug", sa.Text, nullable=False, unique=True),
        sa.Column("title", sa.Text, nullable=False),
    )

    class ProductCatalog(Projection):
        name = "product_catalog"
        tables = (products,)
        # get-by-key on product_catalog is cached, tagged "product:<product_id>"
        key_tags = {"product_catalog": "product:{product_id}"}

        @query("by_slug", cache_tags=lambda row: [f"product:{row['product_id']}"])
        def by_slug(self, read: Reader, slug: str) -> dict | None:
            return read.first(products, slug=slug)

    class OrderSummary(Projection):
        ...
        @query("by_customer", tags=lambda customer_id: [f"customer:{customer_id}"])
        def by_customer(self, read: Reader, customer_id: str) -> list[dict]:
            return read.find(orders, customer_id=customer_id, order_by="order_id")

A document projection (``collections``) declares queries the same way, its ``read``
going by collection name (``read.find("inbox", owner=owner, order_by="-updated")``) on the
collections of its current generation; documents come back JSON-ready, as rows do (ObjectId
and Decimal128 as text, datetimes as ISO 8601 text), cached or not.

A query method takes ``(self, read, *args, **kwargs)`` and returns something JSON can
hold: a row (``dict``), a list of rows, ``None`` or a scalar. ``read`` is a read-only
:class:`Reader` on the projection's store; rows come back as JSON-ready dicts
(timestamps as ISO-8601 text, decimals and UUIDs as text). Arguments are converted to
the method's annotations (``"42"`` from the command line becomes ``42`` for an ``int``).
Of a projection with a ``tenant_column``, ``read`` reads the rows of the tenant the query is
run for and stays with it: another tenant (``read.for_tenant``) and the store itself
(``read.engine``, ``read.database``) are refused (:mod:`projections.tenant_scope`).

Caching (when a cache is configured) is opt-in per query, because an entry is only
ever invalidated through its tags; tags are plain strings such as ``"product:42"``,
the same ones applying an event invalidates (``Projection.cache_tags``, by default
``"<aggregate_type>:<aggregate_id>"``, plus any ``tx.invalidate(...)``):

- ``tags=fn(*args, **kwargs)``: tags known from the arguments. Preferred: every
  result, including ``None`` or ``[]``, is cached and invalidated by these tags.
- ``cache_tags=fn(result)``: tags read off the result (``by_slug`` only learns the
  product id by loading). The first read of a key is not cached; it teaches the
  process the key's tags, and later reads are cached under them. A load whose result
  needs a tag the entry was not registered under is not stored (it is retried once
  with the new tags), and an empty result (``fn`` gives no tags) is never cached,
  so "not found" can never stay stale.
- neither: the query always reads the store.

``key_tags`` maps a table name to a format string over its primary-key columns
(or a function of the primary-key dict returning tags); get-by-key on that table is
then cached under those tags. Tables not named there are read from the store
directly. Lists by field (``Queries.list``) are never cached: no tag covers "every
row with this value", including rows not inserted yet.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from projections.api import Projection
from projections.tag_spelling import key_text

QueryFunction = Callable[..., Any]
ArgTags = Callable[..., Iterable[str]]
ResultTags = Callable[[Any], Iterable[str]]
KeyTag = str | Callable[[dict[str, Any]], Iterable[str]]


class Reader(typing.Protocol):
    """What a ``@query`` method reads through: the projection's tables, read-only.

    ``table`` is the :class:`sqlalchemy.Table` object or its name; for a document
    projection, the name of one of its collections (a key is an ``_id``, ``equals`` and
    ``order_by`` name fields).
    """

    def get(self, table: sa.Table | str, key: Any) -> dict[str, Any] | None:
        """The row with primary key ``key`` (a tuple for a composite key), or ``None``."""
        ...

    def first(self, table: sa.Table | str, **equals: Any) -> dict[str, Any] | None:
        """One row whose columns equal ``equals`` (the lowest primary key), or ``None``."""
        ...

    def find(
        self,
        table: sa.Table | str,
        *,
        order_by: str | Iterable[str] | None = None,
        limit: int | None = None,
        **equals: Any,
    ) -> list[dict[str, Any]]:
        """Rows whose columns equal ``equals``, by ``order_by`` (default: primary key)."""
        ...

    def rows(self, statement: sa.Select[Any]) -> list[dict[str, Any]]:
        """Any SQLAlchemy Core ``select`` over the projection's tables (refused for a
        projection with a ``tenant_column``: it could not be limited to the tenant; and for
        a document projection)."""
        ...


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A declared query, as :func:`query` recorded it."""

    name: str
    function: QueryFunction
    tags: ArgTags | None = None
    cache_tags: ResultTags | None = None
    ttl: float | None = None
    doc: str = ""
    parameters: tuple[inspect.Parameter, ...] = field(default=())

    @property
    def cached(self) -> bool:
        return self.tags is not None or self.cache_tags is not None

    @property
    def signature(self) -> str:
        return ", ".join(_describe(p) for p in self.parameters)


def query(
    name: str | None = None,
    *,
    tags: ArgTags | None = None,
    cache_tags: ResultTags | None = None,
    ttl: float | None = None,
) -> Callable[[QueryFunction], QueryFunction]:
    """Declare a projection method as a named read query (default name: the method's).

    ``tags`` gives cache tags from the query's arguments, ``cache_tags`` from its
    result; ``ttl`` overrides the cache's default time to live (seconds). See the
    module docstring for how each kind of tag is used.
    """

    def mark(function: QueryFunction) -> QueryFunction:
        params = list(inspect.signature(function).parameters.values())
        if len(params) < 2:
            raise TypeError(f"{function.__qualname__}: a query takes (self, read, ...)")
        spec = QuerySpec(
            name=name or function.__name__,
            function=function,
            tags=tags,
            cache_tags=cache_tags,
            ttl=ttl,
            doc=inspect.getdoc(function) or "",
            parameters=tuple(params[2:]),
        )
        function.__readmodel_query__ = spec  # type: ignore[attr-defined]
        return function

    return mark


def declared_queries(projection: Projection | type[Projection]) -> dict[str, QuerySpec]:
    """The ``@query`` methods of a projection (its class and bases), by query name."""
    cls = projection if isinstance(projection, type) else type(projection)
    found: dict[str, QuerySpec] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            spec = getattr(value, "__readmodel_query__", None)
            if isinstance(spec, QuerySpec):
                found[spec.name] = spec
    return found


def key_tags_of(projection: Projection) -> Mapping[str, KeyTag]:
    """The projection's ``key_tags`` by table name (tables may be given as objects)."""
    declared = getattr(projection, "key_tags", None) or {}
    return {(t.name if isinstance(t, sa.Table) else str(t)): tag for t, tag in declared.items()}


def tags_for_key(tag: KeyTag, key: Mapping[str, Any]) -> list[str]:
    """The tags of one row's primary key under a ``key_tags`` entry: a format string over
    the key as typed, and over its canonical spelling when that differs (``Decimal('42.00')``
    is also ``42``: see :mod:`projections.tag_spelling`), field by field. A function's tags
    are as it gives them; the cache adds the canonical spelling of the id each ends with."""
    if callable(tag):
        return [str(t) for t in tag(dict(key))]
    tags = [tag.format(**key)]
    spelled = {name: key_text(value) for name, value in key.items()}
    if any(spelled[name] is not value for name, value in key.items()):
        try:
            canonical = tag.format(**spelled)
        except (ValueError, TypeError):  # a format spec of the typed value ("{id:.2f}")
            return tags
        if canonical != tags[0]:
            tags.append(canonical)
    return tags


def _describe(parameter: inspect.Parameter) -> str:
    text = parameter.name
    if parameter.annotation is not inspect.Parameter.empty:
        annotation = parameter.annotation
        text += ": " + (annotation if isinstance(annotation, str) else annotation.__name__)
    if parameter.default is not inspect.Parameter.empty:
        text += f" = {parameter.default!r}"
    return text
