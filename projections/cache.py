"""Query caches: cache-aside reads of read-model queries, invalidated by tag.

An entry is ``(projection, key) -> JSON value`` tagged with the aggregates it was built
from (``"product:42"``); tags are namespaced by projection. Applying a batch invalidates
the tags of its events (``Projection.cache_tags`` plus ``tx.invalidate(...)``): the engine
records them in the store's ``rm_invalidations`` inside the apply transaction and tells
the cache after the commit, so a crash in between is redone (``projections/invalidations.py``).

Never stale: a reader snapshots the projection's invalidation state *before* it loads,
and its value is stored only if none of its tags was invalidated since; an invalidation
deletes every entry tagged with it. So a value loaded before an invalidation can never
be written back after it.

One key, many spellings: a tag is registered and invalidated with the canonical spellings
of the id it ends with too (``"price:42.00"`` also as ``"price:42"``, see
:mod:`projections.tag_spelling`), whoever wrote it: ``key_tags``, ``@query`` tags, an
event's ``cache_tags`` or ``tx.invalidate(...)``.

Backends: :class:`MemoryCache` (one process; the embedded demo, tests) and
:class:`projections.redis_cache.RedisCache` (shared; optional near cache), chosen by
:func:`open_cache` from ``[cache] url``.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from outbox.errors import ReadmodelError
from outbox.json_numbers import dumps_exact, loads_exact
from projections.tag_spelling import tag_spellings

if TYPE_CHECKING:
    from config.cache_settings import CacheSettings


class CacheError(ReadmodelError):
    """The cache server cannot be reached (an invalidation is then redone later)."""


class CacheHooks:
    """Extension point (metrics): no-ops; ``workers/metrics.py`` subclasses it."""

    def hit(self, projection: str) -> None:
        """A read was answered from the cache."""

    def miss(self, projection: str) -> None:
        """A read was loaded from the read model (and cached when still fresh)."""

    def invalidated(self, projection: str, tags: int) -> None:
        """``tags`` tags of ``projection`` were invalidated."""

    def fallback(self, projection: str, error: BaseException) -> None:
        """The cache server was unreachable; the read was served from the read model."""


class Cache(ABC):
    """Cache-aside over read-model queries; one instance is shared by a process's threads."""

    hooks: CacheHooks

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        ttl_jitter: float = 0.1,
        single_flight_wait: float = 0.2,
        hooks: CacheHooks | None = None,
    ) -> None:
        self.hooks = hooks or CacheHooks()
        self.ttl = ttl
        self.ttl_jitter = ttl_jitter
        self.single_flight_wait = single_flight_wait
        self._flights = SingleFlight()

    @abstractmethod
    def get_or_load(
        self,
        projection: str,
        key: str,
        tags: Iterable[str],
        load: Callable[[], Any],
        *,
        ttl: float | None = None,
    ) -> Any:
        """The cached value of ``key``, else ``load()`` (cached under ``tags`` when still
        fresh). Hit or miss, the caller gets the value as JSON gives it back (tuples become
        lists, a ``Decimal`` a string). Never raises because the cache server is down.
        ``tags`` is iterated on a miss only: a hit pays nothing for a :class:`LazyTags`."""

    @abstractmethod
    def invalidate(self, projection: str, tags: Iterable[str]) -> None:
        """Drop every entry of ``projection`` tagged with one of ``tags``; loads that began
        before can no longer store. Raises :class:`CacheError` when the server is down."""

    @abstractmethod
    def invalidate_projection(self, projection: str) -> None:
        """Drop every entry of ``projection`` (after a replay swapped its tables)."""

    def close(self) -> None:
        """Release connections and threads."""
        return None

    def eviction_risk(self) -> str | None:
        """Why this cache's server may drop its bookkeeping on its own (which would leave
        entries that no invalidation reaches), or ``None``."""
        return None

    def _lifetime(self, ttl: float | None) -> float:
        base = self.ttl if ttl is None else ttl
        if base <= 0:
            raise ValueError(f"a cache TTL must be positive, got {base}")
        return base * (1 + random.uniform(-self.ttl_jitter, self.ttl_jitter))


class LazyTags:
    """Tags worked out by ``compute()`` when first iterated: a cache iterates an entry's tags
    only on a miss (to store it), so a hit, the hot path, never computes them."""

    __slots__ = ("_compute", "_tags")

    def __init__(self, compute: Callable[[], Iterable[str]]) -> None:
        self._compute = compute
        self._tags: list[str] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._tags is None:
            self._tags = list(self._compute())
        return iter(self._tags)


def dumps(projection: str, key: str, value: Any) -> bytes:
    try:
        return dumps_exact(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise TypeError(
            f"cache {projection}:{key}: the value is not JSON-serialisable ({exc})"
        ) from None


def loads(blob: bytes) -> Any:
    return loads_exact(blob)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"type {type(value).__name__} is not JSON-serialisable")


def tag_list(tags: Iterable[str]) -> list[str]:
    out = sorted(set(tags))
    for tag in out:
        if not isinstance(tag, str):
            raise TypeError(f"cache tags are strings, got {tag!r}")
    return out


def spelled_tags(names: list[str]) -> list[str]:
    """``names`` (from :func:`tag_list`) with every canonical spelling of each, sorted: what
    an entry is registered under and an invalidation stamps."""
    out = set(names)
    for tag in names:
        spelled = tag_spellings(tag)
        if len(spelled) > 1:
            out.update(spelled)
    return sorted(out) if len(out) > len(names) else names


def check_projection(projection: str) -> None:
    if not projection or ":" in projection:
        raise ValueError(f"cache projection names are non-empty without ':', got {projection!r}")


class _Flight:
    __slots__ = ("done", "blob", "epoch")

    def __init__(self, epoch: int) -> None:
        self.done = threading.Event()
        self.blob: bytes | None = None
        self.epoch = epoch


class SingleFlight:
    """One loader per key in this process; the others wait for its result.

    A waiter takes the leader's result only if the leader could cache it (no invalidation
    of its tags anywhere since the leader's snapshot) and no invalidation happened in this
    process since the leader began (``epoch``): so it never gets a value older than an
    invalidation that finished before it asked. Otherwise it loads itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Any, _Flight] = {}
        self.epoch = 0

    def bump(self) -> None:
        with self._lock:
            self.epoch += 1

    def run(
        self, key: Any, wait: float, load: Callable[[], tuple[bytes, bool]], *, lead: bool = False
    ) -> bytes:
        """``load()``'s JSON for ``key``, or a concurrent leader's when fresh enough.
        ``lead``: load in any case (this caller holds the cross-process lock); later
        callers wait for this one."""
        with self._lock:
            flight = self._flights.get(key)
            leader = lead or flight is None or flight.epoch != self.epoch
            if leader:
                flight = self._flights[key] = _Flight(self.epoch)
        assert flight is not None
        if not leader:
            if flight.done.wait(wait) and flight.blob is not None:
                return flight.blob
            return load()[0]
        try:
            blob, shareable = load()
            if shareable:
                flight.blob = blob
            return blob
        finally:
            flight.done.set()
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]


class _MemoryEntry:
    __slots__ = ("blob", "expires", "tags")

    def __init__(self, blob: bytes, expires: float, tags: list[str]) -> None:
        self.blob = blob
        self.expires = expires
        self.tags = tags


class MemoryCache(Cache):
    """An in-process cache with the same guarantees as Redis's, for one process.

    Bounded: at most ``max_entries`` entries (least recently used go first); a tag's key
    set loses a key when the key expires or is evicted.
    """

    def __init__(self, *, max_entries: int = 10_000, **options: Any) -> None:
        super().__init__(**options)
        self.max_entries = max(1, max_entries)
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _MemoryEntry] = OrderedDict()
        self._tagged: dict[tuple[str, str], set[str]] = {}
        self._seq: dict[str, int] = {}
        # last invalidation (seq) per tag, kept only while some load of the projection runs
        self._versions: dict[tuple[str, str], int] = {}
        self._wiped: dict[str, int] = {}
        self._loading: dict[str, int] = {}

    def get_or_load(
        self,
        projection: str,
        key: str,
        tags: Iterable[str],
        load: Callable[[], Any],
        *,
        ttl: float | None = None,
    ) -> Any:
        check_projection(projection)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get((projection, key))
            if entry is not None and entry.expires > now:
                self._entries.move_to_end((projection, key))
                blob = entry.blob
            else:
                blob = None
                if entry is not None:
                    self._drop((projection, key))
        if blob is not None:
            self.hooks.hit(projection)
            return loads(blob)
        self.hooks.miss(projection)
        tag_names = spelled_tags(tag_list(tags))
        lifetime = self._lifetime(ttl)

        def fill() -> tuple[bytes, bool]:
            with self._lock:
                since = self._seq.get(projection, 0)
                self._loading[projection] = self._loading.get(projection, 0) + 1
            try:
                fresh = dumps(projection, key, load())
            except BaseException:
                with self._lock:
                    self._finish_load(projection)
                raise
            with self._lock:
                stored = self._unchanged(projection, tag_names, since)
                if stored:
                    self._put(projection, key, fresh, time.monotonic() + lifetime, tag_names)
                self._finish_load(projection)
            return fresh, stored

        return loads(self._flights.run((projection, key), self.single_flight_wait, fill))

    def _finish_load(self, projection: str) -> None:
        left = self._loading[projection] - 1
        if left:
            self._loading[projection] = left
            return
        del self._loading[projection]
        for tag in [t for t in self._versions if t[0] == projection]:
            del self._versions[tag]
        self._wiped.pop(projection, None)

    def _unchanged(self, projection: str, tags: list[str], since: int) -> bool:
        # the caller's load is still counted in _loading, so every invalidation since
        # ``since`` left its version behind
        if self._seq.get(projection, 0) == since:
            return True
        if self._wiped.get(projection, 0) > since:
            return False
        return all(self._versions.get((projection, t), 0) <= since for t in tags)

    def _put(self, projection: str, key: str, blob: bytes, expires: float, tags: list[str]) -> None:
        ident = (projection, key)
        if ident in self._entries:
            self._drop(ident)
        self._entries[ident] = _MemoryEntry(blob, expires, tags)
        for tag in tags:
            self._tagged.setdefault((projection, tag), set()).add(key)
        now = time.monotonic()
        while self._entries:
            oldest, entry = next(iter(self._entries.items()))
            if len(self._entries) <= self.max_entries and entry.expires > now:
                break
            self._drop(oldest)

    def _drop(self, ident: tuple[str, str]) -> None:
        entry = self._entries.pop(ident, None)
        if entry is None:
            return
        for tag in entry.tags:
            keys = self._tagged.get((ident[0], tag))
            if keys is not None:
                keys.discard(ident[1])
                if not keys:
                    del self._tagged[(ident[0], tag)]

    def invalidate(self, projection: str, tags: Iterable[str]) -> None:
        check_projection(projection)
        given = tag_list(tags)
        if not given:
            return
        tag_names = spelled_tags(given)
        with self._lock:
            seq = self._seq[projection] = self._seq.get(projection, 0) + 1
            for tag in tag_names:
                if self._loading.get(projection):
                    self._versions[(projection, tag)] = seq
                for key in list(self._tagged.get((projection, tag), ())):
                    self._drop((projection, key))
        self._flights.bump()
        self.hooks.invalidated(projection, len(given))

    def invalidate_projection(self, projection: str) -> None:
        check_projection(projection)
        with self._lock:
            seq = self._seq[projection] = self._seq.get(projection, 0) + 1
            if self._loading.get(projection):
                self._wiped[projection] = seq
            for ident in [i for i in self._entries if i[0] == projection]:
                self._drop(ident)
        self._flights.bump()

    def stats(self) -> dict[str, int]:
        """Sizes of the bookkeeping (entries, tag sets, remembered versions)."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "tags": len(self._tagged),
                "tagged_keys": sum(len(k) for k in self._tagged.values()),
                "versions": len(self._versions),
            }


def open_cache(settings: CacheSettings, hooks: CacheHooks | None = None) -> Cache | None:
    """The cache ``settings.url`` names: ``""`` none, ``memory://`` or ``redis://...``."""
    if not settings.url:
        return None
    options: dict[str, Any] = {
        "ttl": settings.ttl.total_seconds(),
        "ttl_jitter": settings.ttl_jitter,
        "single_flight_wait": settings.single_flight_wait.total_seconds(),
        "hooks": hooks,
    }
    if settings.url.startswith("memory://"):
        return MemoryCache(max_entries=settings.near_cache_size or 10_000, **options)
    from projections.redis_cache import RedisCache

    return RedisCache(
        settings.url,
        key_prefix=settings.key_prefix,
        lock_lease=settings.lock_lease.total_seconds(),
        near_cache_size=settings.near_cache_size,
        version_ttl=settings.version_ttl.total_seconds(),
        timeout=settings.connect_timeout.total_seconds(),
        retry_after=settings.retry_after.total_seconds(),
        **options,
    )
