"""The query API services and scripts call: get by key, list by an indexed column with cursor
pagination, and the projections' declared ``@query`` methods; cache-aside through the
configured cache, and read-your-writes through consistency tokens.

Usable from plain Python (no broker)::

    from projections import ConsistencyToken, open_queries

    queries = open_queries(settings)          # store, projections and cache from settings
    row = queries.get("user_directory", "u-42").value
    page = queries.list("order_summary", {"customer_id": "c-7"}, limit=20)
    more = queries.list("order_summary", {"customer_id": "c-7"}, after=page.next)
    hit = queries.run("product_catalog", "by_slug", "blue-mug").value
    fresh = queries.get("order_summary", "o-9", wait_for="event:3f1c...", timeout=2.0)
    queries.close()

A read with ``wait_for`` goes to the store, not the cache: the cache may still hold the
value its event is about to invalidate (invalidations follow the commit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog

from config import ConfigError
from outbox.errors import ReadmodelError
from projections.api import Projection
from projections.cache import LazyTags
from projections.cache_keys import (
    decimals_marked,
    key_json,
    numbers_canonical,
    tenant_key,
    whole_numbers_as_int,
)
from projections.consistency import (
    ConsistencyError,
    ConsistencyToken,
    ConsistencyWaiter,
    Reached,
)
from projections.document_reader import DocumentReader
from projections.learned_tags import LearnedTags
from projections.queries import QuerySpec, declared_queries, key_tags_of, tags_for_key
from projections.query_checks import bind_arguments, check_indexed, indexes
from projections.query_errors import QueryError
from projections.query_reader import Page, SqlReader
from projections.query_values import plain_value
from projections.store import Store
from projections.tenant_scope import for_query

logger = structlog.get_logger("readmodel.queries")

Token = ConsistencyToken | str


@dataclass(frozen=True, slots=True)
class Result:
    """A query's ``value``; ``stale`` when a consistency wait failed and ``stale_ok`` was
    given (``consistency`` then holds the error that says how far the projection got)."""

    value: Any
    stale: bool = False
    consistency: Reached | ConsistencyError | None = None


class Queries:
    """Reads the projections' tables, through a cache when one is given."""

    def __init__(
        self,
        projections: Iterable[Projection],
        stores: Mapping[str, Store],
        log_engine: sa.Engine,
        *,
        cache: Any = None,
        sources: Iterable[str] = (),
        default_timeout: float = 5.0,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.projections = {p.name: p for p in projections}
        self.stores = dict(stores)
        self.cache = cache
        self.default_timeout = default_timeout
        self.waiter = ConsistencyWaiter(log_engine, self._store, sources)
        self._on_close = on_close
        self._readers: dict[str, SqlReader] = {}
        self._document_readers: dict[str, DocumentReader] = {}
        self._learned_tags = LearnedTags()

    @classmethod
    def from_engine(
        cls, engine: Any, log_engine: sa.Engine, *, sources: Iterable[str] = (), **options: Any
    ) -> Queries:
        """Queries over a :class:`ProjectionEngine`'s projections and stores, through the
        cache the engine invalidates (the only way to share a ``memory://`` cache)."""
        return cls(
            engine.projections.values(),
            engine.stores,
            log_engine,
            cache=getattr(engine, "cache", None),
            sources=sources,
            **options,
        )

    # -- catalogue -----------------------------------------------------------------

    def projection(self, name: str) -> Projection:
        try:
            return self.projections[name]
        except KeyError:
            known = ", ".join(sorted(self.projections)) or "none"
            raise QueryError(f"unknown projection {name!r} (known: {known})") from None

    def _store(self, projection: Projection) -> Store:
        try:
            return self.stores[projection.store]
        except KeyError:
            raise ReadmodelError(
                f"projection {projection.name!r} uses store {projection.store!r}, "
                f"which is not configured"
            ) from None

    def reader(
        self, projection: str | Projection, tenant: str | None = None
    ) -> SqlReader | DocumentReader:
        """The read-only :class:`Reader` of a projection's tables or collections (of
        ``tenant``'s rows for a projection with a ``tenant_column``, which must then be
        given)."""
        p = self.projection(projection) if isinstance(projection, str) else projection
        if p.collections:
            return self._documents(p).for_tenant(tenant)
        return self._reader(p).for_tenant(tenant)

    def _reader(self, projection: str | Projection) -> SqlReader:
        p = self.projection(projection) if isinstance(projection, str) else projection
        reader = self._readers.get(p.name)
        if reader is None:
            engine = getattr(self._store(p), "engine", None)
            if not isinstance(engine, sa.Engine):
                raise QueryError(f"projection {p.name!r}: its store does not support queries")
            reader = self._readers[p.name] = SqlReader(
                engine,
                p.name,
                p.tables,
                tenant_column=p.tenant_column,
                shared_tables=p.shared_tables,
            )
        return reader

    def queries_of(self, projection: str) -> dict[str, QuerySpec]:
        return declared_queries(self.projection(projection))

    def indexed(self, projection: str, table: str | None = None) -> list[list[str]]:
        """The column lists of the table's indexes (primary key, unique, ``Index``)."""
        return indexes(self._reader(projection).table(table))

    # -- queries -------------------------------------------------------------------

    def get(
        self,
        projection: str,
        key: Any,
        *,
        table: str | None = None,
        tenant: str | None = None,
        wait_for: Token | None = None,
        timeout: float | None = None,
        stale_ok: bool = False,
    ) -> Result:
        """The row with primary key ``key`` (``Result.value`` is ``None`` when absent); of
        ``tenant`` for a projection with a ``tenant_column``."""
        p = self.projection(projection)
        if p.collections:
            return self._get_document(p, key, table, tenant, wait_for, timeout, stale_ok)
        reader = self.reader(p, tenant)
        t = reader.table(table)
        key_values = reader.key_dict(t, key)
        consistency, stale = self._wait(p, wait_for, timeout, stale_ok)

        def load() -> dict[str, Any] | None:
            return reader.get(t, tuple(key_values.values()))

        tag = key_tags_of(p).get(t.name)
        if tag is None or self.cache is None or consistency is not None and not stale:
            return Result(load(), stale, consistency)
        tags = LazyTags(lambda: tags_for_key(tag, key_values))  # worked out on a miss only
        key_part = key_json(numbers_canonical(list(key_values.values())))
        cache_key = tenant_key(tenant) + "get:" + t.name + ":" + key_part
        value = self.cache.get_or_load(p.name, cache_key, tags, load)
        return Result(value, stale, consistency)

    def list(
        self,
        projection: str,
        where: Mapping[str, Any] | None = None,
        *,
        table: str | None = None,
        after: str | None = None,
        limit: int = 50,
        allow_unindexed: bool = False,
        tenant: str | None = None,
        wait_for: Token | None = None,
        timeout: float | None = None,
        stale_ok: bool = False,
    ) -> Page:
        """Rows whose columns equal ``where``, by primary key, ``limit`` at a time; pass the
        page's ``next`` as ``after`` for the following page. Each column of ``where`` must
        belong to an index led by one of them, unless ``allow_unindexed``."""
        p = self.projection(projection)
        if p.collections:
            documents = self._documents(p).for_tenant(tenant)
            collection = documents.collection(table)
            consistency, stale = self._wait(p, wait_for, timeout, stale_ok)
            page = documents.page(collection, dict(where or {}), after=after, limit=limit)
            return Page(page.rows, page.next, stale, consistency)
        reader = self.reader(p, tenant)
        t = reader.table(table)
        where = dict(where or {})
        for name in where:
            reader.column(t, name)
        if not allow_unindexed:
            check_indexed(t, where, reader.scoped_column(t))
        consistency, stale = self._wait(p, wait_for, timeout, stale_ok)
        page = reader.page(t, where, after=after, limit=limit)
        return Page(page.rows, page.next, stale, consistency)

    def run(
        self,
        projection: str,
        name: str,
        *args: Any,
        tenant: str | None = None,
        wait_for: Token | None = None,
        timeout: float | None = None,
        stale_ok: bool = False,
        **kwargs: Any,
    ) -> Result:
        """Run the projection's ``@query`` named ``name`` with ``args`` and ``kwargs``; its
        reads are limited to ``tenant``'s rows for a projection with a ``tenant_column``."""
        p = self.projection(projection)
        specs = declared_queries(p)
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            raise QueryError(f"projection {p.name!r} has no query {name!r} (known: {known})")
        bound = bind_arguments(p, spec, args, kwargs)
        reader = for_query(self.reader(p, tenant), spec.name)  # kept to its tenant
        consistency, stale = self._wait(p, wait_for, timeout, stale_ok)

        def load() -> Any:
            return spec.function(p, reader, *bound.args, **bound.kwargs)

        if not spec.cached or self.cache is None or consistency is not None and not stale:
            return Result(load(), stale, consistency)
        arguments = key_json([bound.args, sorted(bound.kwargs.items())])
        cache_key = tenant_key(tenant) + "q:" + spec.name + ":" + arguments
        tags = spec.tags

        def base() -> frozenset[str]:
            return frozenset(tags(*bound.args, **bound.kwargs)) if tags else frozenset()

        value = self._learned_tags.cached(self.cache, p.name, spec, cache_key, base, load)
        return Result(value, stale, consistency)

    def _documents(self, p: Projection) -> DocumentReader:
        database = getattr(self._store(p), "database", None)
        if database is None:
            raise QueryError(f"projection {p.name!r}: its store holds no documents")
        reader = self._document_readers.get(p.name)
        if reader is None:  # kept: it remembers the generation of the collections it read
            reader = self._document_readers[p.name] = DocumentReader(database, p)
        return reader

    def _get_document(
        self,
        p: Projection,
        key: Any,
        collection: str | None,
        tenant: str | None,
        wait_for: Token | None,
        timeout: float | None,
        stale_ok: bool,
    ) -> Result:
        """:meth:`get` of a document projection: the document with ``_id == key`` (a
        :class:`JsonValue` as its value), cached under the collection's ``key_tags`` entry
        (over ``_id``). A whole number (``42.0``, ``4.2e1``) is read as the integer: MongoDB
        compares numbers across types, so it finds the same document, whose entry and tag
        (``account:42``, an event of aggregate ``42``) are then those of ``42``. A decimal is
        marked as one in the cache key (the text ``_id`` of its digits is another document);
        its tag, like a whole number's past 64 bits, is spelled canonically too (an event of
        aggregate ``1.5`` invalidates the get of ``Decimal('1.50')``)."""
        key = whole_numbers_as_int(plain_value(key))
        documents = self._documents(p).for_tenant(tenant)
        name = documents.collection(collection)
        consistency, stale = self._wait(p, wait_for, timeout, stale_ok)

        def load() -> dict[str, Any] | None:
            return documents.get(name, key)

        tag = key_tags_of(p).get(name)
        fresh = consistency is not None and not stale
        if tag is None or self.cache is None or fresh:
            return Result(load(), stale, consistency)
        cache_key = tenant_key(tenant) + "get:" + name + ":" + key_json([decimals_marked(key)])
        tags = LazyTags(lambda: tags_for_key(tag, {"_id": key}))
        value = self.cache.get_or_load(p.name, cache_key, tags, load)
        return Result(value, stale, consistency)

    def wait(self, projection: str, token: Token, timeout: float | None = None) -> Reached:
        """Block until ``projection`` has applied ``token`` (see :mod:`projections.consistency`);
        of a tenant projection, say only that it has (as a ``wait_for`` read does)."""
        p = self.projection(projection)
        return self._wait(p, token, timeout, False)[0]  # type: ignore[return-value]

    def close(self) -> None:
        """Close what :func:`open_queries` opened (a cache passed in stays open)."""
        if self._on_close is not None:
            self._on_close()

    # -- internals -----------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        return self.default_timeout if timeout is None else timeout

    def _wait(
        self, p: Projection, token: Token | None, timeout: float | None, stale_ok: bool
    ) -> tuple[Reached | ConsistencyError | None, bool]:
        if token is None:
            return None, False
        try:
            reached = self.waiter.wait(p, _token(token), self._timeout(timeout))
        except ConsistencyError as error:
            exc = error
            if p.tenant_column is not None:  # the event may be another tenant's: say nothing
                exc = type(error)(
                    f"projection {p.name!r} has not applied the event awaited by "
                    f"{error.token} (details are not shown to tenant reads: see readmodel "
                    f"status and readmodel parked list)",
                    error.token,
                    error.projection,
                )
            if not stale_ok:
                raise exc from None
            logger.info("serving a stale read", projection=p.name, reason=str(exc))
            return exc, True
        if p.tenant_column is not None:  # applied, and not which event (whose source) it was
            reached = Reached(reached.token, "", 0, None, None, reached.waited)
        return reached, False


def _token(token: Token) -> ConsistencyToken:
    return token if isinstance(token, ConsistencyToken) else ConsistencyToken.parse(token)


def open_queries(
    settings: Any, *, cache: Any = "settings", default_timeout: float = 5.0
) -> Queries:
    """Queries over the store, projections and (unless ``cache=None``) the Redis cache of
    ``settings``; a ``memory://`` cache is not used here (see :meth:`Queries.from_engine`)."""
    from outbox.log import EventLog
    from projections.api import load_projections
    from projections.sql_store import SqlStore
    from projections.stores import open_store

    try:
        projections = load_projections(settings.projections, settings.store_urls)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise ConfigError(f"projections: cannot load {settings.projections}: {exc}") from exc
    log = EventLog(settings.store.url)
    default = SqlStore(settings.store.url, engine=log.engine, label=settings.store_label("default"))
    stores: dict[str, Store] = {"default": default}
    for name, store_settings in settings.stores.items():
        if name != "default":
            stores[name] = open_store(store_settings.url, label=settings.store_label(name))
    owned = cache == "settings"
    if owned:
        cache = _cache_from(settings)

    def close() -> None:
        if owned and cache is not None:
            cache.close()
        for store in stores.values():
            store.close()

    return Queries(
        projections,
        stores,
        log.engine,
        cache=cache,
        sources=settings.sources,
        default_timeout=default_timeout,
        on_close=close,
    )


def _cache_from(settings: Any) -> Any:
    """The shared cache of ``settings``; never a ``memory://`` one, which only the process
    that applies the events can keep fresh (use :meth:`Queries.from_engine` there)."""
    from projections.cache import open_cache

    url = settings.cache.url
    if not url or url.startswith("memory://"):
        return None
    return open_cache(settings.cache)
