"""What ``cache_tags`` queries teach a process: the tags each key's result needs, known only
once it is loaded (``@query(cache_tags=...)``, see :mod:`projections.queries`). The first
read of a key is not cached and teaches its tags; later reads are cached under them; a load
whose result needs a tag the entry was not registered under is not stored."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from projections.cache import LazyTags
from projections.queries import QuerySpec

_LEARNED_KEYS = 10_000


class _Retag(Exception):
    """A load's result needs tags its cache entry was not registered under: not stored."""

    def __init__(self, value: Any, needed: frozenset[str]) -> None:
        super().__init__("result tags changed")
        self.value = value
        self.needed = needed


class LearnedTags:
    """The learned tags of the last ``_LEARNED_KEYS`` keys read, by (projection, cache key);
    shared by the threads of one :class:`projections.Queries`."""

    def __init__(self) -> None:
        self._learned: OrderedDict[tuple[str, str], frozenset[str]] = OrderedDict()
        self._learning = threading.Lock()

    def cached(
        self,
        cache: Any,
        projection: str,
        spec: QuerySpec,
        cache_key: str,
        base_of: Callable[[], frozenset[str]],
        load: Callable[[], Any],
    ) -> Any:
        """``load()`` through ``cache`` under the tags ``base_of()`` gives (from the
        arguments: worked out on a miss only, when they are all) and those learned for the
        key."""
        if spec.cache_tags is None:
            tags = LazyTags(base_of)
            return cache.get_or_load(projection, cache_key, tags, load, ttl=spec.ttl)
        base = base_of()
        result_tags = spec.cache_tags
        memo = (projection, cache_key)
        learned = self._learned.get(memo, frozenset())
        registered = base | learned

        def checked() -> Any:
            value = load()
            needed = frozenset(result_tags(value)) if not _empty(value) else frozenset()
            if (not needed and not base) or not needed <= registered:
                raise _Retag(value, needed)
            return value

        if not registered:
            value = load()
            self._learn(memo, frozenset(result_tags(value)) if not _empty(value) else None)
            return value
        try:
            return cache.get_or_load(projection, cache_key, registered, checked, ttl=spec.ttl)
        except _Retag as retag:
            self._learn(memo, retag.needed or None)
            return retag.value

    def _learn(self, memo: tuple[str, str], tags: frozenset[str] | None) -> None:
        """Remember (or forget) the tags of ``memo``'s results. Locked: queries run in many
        threads, and another's pop between storing and ``move_to_end`` would raise ``KeyError``
        in the query. Reads of ``_learned`` (one ``get``) need no lock."""
        with self._learning:
            if not tags:
                self._learned.pop(memo, None)
                return
            self._learned[memo] = tags
            self._learned.move_to_end(memo)
            while len(self._learned) > _LEARNED_KEYS:
                self._learned.popitem(last=False)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, list | tuple | dict) and not value)
