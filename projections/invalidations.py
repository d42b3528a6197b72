"""Cache invalidations journaled with each batch and done after its commit.

When a cache is attached, a store records the cache tags of every batch in its
``rm_invalidations`` table inside the batch's own transaction. After the commit the
engine tells the cache and deletes the row (:func:`finish`). A crash, or a cache server
that is down, between the two leaves the row behind: :func:`redo` does it again when a
worker starts and from the sweeper. Doing an invalidation twice costs one extra miss.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import structlog

from outbox.errors import StoreError
from projections.cache import Cache, CacheError
from projections.store import Invalidation, Store
from projections.store_names import naming

logger = structlog.get_logger("readmodel.cache")

_WARN_EVERY = 10.0
_warned = {"at": -_WARN_EVERY}
_warn_lock = threading.Lock()
REDO_BATCH = 500
WHOLE_PROJECTION = "*"
"""The tag of an invalidation that covers every entry of a projection (a replay's swap)."""


def finish(cache: Cache, store: Store, invalidation: Invalidation) -> bool:
    """Invalidate a committed batch's tags and forget its journal row; ``False`` when the
    cache is unreachable (the row stays for :func:`redo`)."""
    try:
        _invalidate(cache, invalidation.projection, invalidation.tags)
    except CacheError as exc:
        _warn("cache invalidation failed; the sweeper will redo it", exc, invalidation.projection)
        return False
    try:
        with naming(store):
            store.forget_invalidations([invalidation.id])
    except StoreError as exc:
        _warn("cannot delete a done invalidation; it will be redone", exc, invalidation.projection)
    return True


def redo(cache: Cache, stores: Iterable[Store], older_than: float = 0.0) -> int:
    """Do the journaled invalidations at least ``older_than`` seconds old; returns how many
    rows were done. Stops (and returns) when the cache is unreachable."""
    done = 0
    seen: set[int] = set()
    for store in stores:
        if id(store) in seen or not store.journal_invalidations:
            continue
        seen.add(id(store))
        while True:
            with naming(store):
                rows = store.pending_invalidations(older_than, REDO_BATCH)
            if not rows:
                break
            tags: dict[str, set[str]] = {}
            for row in rows:
                tags.setdefault(row.projection, set()).update(row.tags)
            try:
                for projection, projection_tags in tags.items():
                    _invalidate(cache, projection, projection_tags)
            except CacheError as exc:
                _warn("redoing cache invalidations failed", exc, None)
                return done
            with naming(store):
                store.forget_invalidations([row.id for row in rows])
            done += len(rows)
            if len(rows) < REDO_BATCH:
                break
    if done:
        logger.info("redid journaled cache invalidations", rows=done)
    return done


def _invalidate(cache: Cache, projection: str, tags: Iterable[str]) -> None:
    tags = set(tags)
    if WHOLE_PROJECTION in tags:
        cache.invalidate_projection(projection)
    else:
        cache.invalidate(projection, tags)


def _warn(message: str, error: BaseException, projection: str | None) -> None:
    now = time.monotonic()
    with _warn_lock:
        if now - _warned["at"] < _WARN_EVERY:
            return
        _warned["at"] = now
    logger.warning(message, projection=projection, error=str(error))
