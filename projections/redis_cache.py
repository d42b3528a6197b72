"""The Redis cache: entries, tag sets and tag versions kept by Lua scripts
(:mod:`projections.redis_scripts`).

Keys, under ``key_prefix`` ``P`` (``p`` is the projection):

``P e:p:key``   the entry: ``<expires at, epoch ms>|<JSON>``, with a TTL
``P t:p:tag``   the tag's entries: a sorted set of keys scored by their expiry; each store
                trims the expired ones (``ZREMRANGEBYSCORE``) and the set expires with its
                last member, so expired keys leave it
``P a:p``       every entry of the projection, the same way (for :meth:`invalidate_projection`)
``P x:p:n``     ``a:p`` as the wipe that bumped the counter to ``n`` found it: its entries are
                deleted a chunk at a time (it keeps ``a:p``'s expiry)
``P x:p:n:i``   the same for the ``i``-th tag of the invalidation that bumped it to ``n``,
                when that tag had too many entries to delete in the invalidation's script
``P d:p``       the names of the ``x:p:…`` sets not yet emptied (an invalidation cut short
                leaves them; the next one of the projection, its redo, empties them too)
``P s:p``       the projection's invalidation counter (starts at Redis's clock in µs, so a
                Redis that lost its data never hands out an old number again)
``P b:p``       the counter's first value in this Redis: a snapshot older than it was
                taken before Redis lost its data, with the versions that would refuse it
``P v:p:tag``   the counter value of the tag's last invalidation (lives ``version_ttl``)
``P w:p``       the counter value of the last :meth:`invalidate_projection`
``P l:p:key``   a loader's single-flight lock (lives ``lock_lease``)
``P names``     the projections that have used the cache (for :data:`lua.CLAIM`)
``P run``       the run id of the Redis server process that :data:`lua.CLAIM` last emptied

A read that misses snapshots ``s`` in the same round trip; the store script writes only
if ``s`` is unchanged, or else no tag of the entry (nor the whole projection) was
invalidated after the snapshot. An invalidation bumps ``s``, stamps its tags' versions
and deletes their entries, atomically, so a value loaded before an invalidation can
never be stored after it. No KEYS or SCAN anywhere.

A whole-projection wipe (:meth:`RedisCache.invalidate_projection`) is the same bump, with
``w`` stamped and ``a`` renamed to ``x`` in one short script; the entries are then deleted
by further scripts of at most ``wipe_chunk`` keys each, so that no single script blocks
Redis (single-threaded) for long, however large the projection. A tag invalidation deletes
up to ``wipe_chunk`` entries in its own script and sets larger tags aside the same way
(their versions are stamped at once). Stores refused by the bump stay refused; an entry the
chunks have not reached yet is still served until they do, and the call returns once they
have.

Redis must not evict keys on its own (``maxmemory-policy noeviction`` or a memory budget
that is never reached): an evicted tag set would leave its entries un-invalidatable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
import structlog
from redis.backoff import NoBackoff
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.retry import Retry

from outbox.error_text import describe_error
from projections import redis_scripts as lua
from projections.cache import (
    Cache,
    CacheError,
    check_projection,
    dumps,
    loads,
    spelled_tags,
    tag_list,
)
from projections.near_cache import NearCache

logger = structlog.get_logger("readmodel.cache")


_TAGS_PER_CALL = 1000
_WARN_EVERY = 10.0


class RedisCache(Cache):
    """The shared cache. Thread-safe; one per process (it holds a connection pool and,
    with ``near_cache_size > 0``, a near cache and its listener thread)."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "readmodel:cache:",
        lock_lease: float = 5.0,
        near_cache_size: int = 10_000,
        version_ttl: float = 600.0,
        timeout: float = 0.25,
        retry_after: float = 1.0,
        wipe_chunk: int = 2_000,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if wipe_chunk < 1:
            raise ValueError(f"wipe_chunk must be at least 1, got {wipe_chunk}")
        self.prefix = key_prefix
        self.wipe_chunk = wipe_chunk
        self.lock_lease_ms = int(lock_lease * 1000)
        self.version_ttl = version_ttl
        self._no_info_warned = False
        self.retry_after = retry_after
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            redis_connect_func=self._connected,
        )
        self._begin = self.client.register_script(lua.BEGIN)
        self._store = self.client.register_script(lua.STORE)
        self._invalidate = self.client.register_script(lua.INVALIDATE)
        self._wipe = self.client.register_script(lua.WIPE)
        self._invalidate_oom = self.client.register_script(lua.INVALIDATE_OOM)
        self._wipe_oom = self.client.register_script(lua.ALLOW_OOM + lua.WIPE)
        self._wipe_chunk = self.client.register_script(lua.WIPE_CHUNK)
        self._down_until = 0.0
        self._last_error: BaseException | None = None
        self._warned_at = -_WARN_EVERY
        self._suppressed = 0
        self.near: NearCache | None = None
        kwargs = self.client.connection_pool.connection_kwargs
        if near_cache_size > 0 and not url.startswith(("rediss://", "unix://")):
            self.near = NearCache(
                host=kwargs.get("host", "localhost"),
                port=int(kwargs.get("port", 6379)),
                prefix=f"{key_prefix}e:",
                size=near_cache_size,
                username=kwargs.get("username"),
                password=kwargs.get("password"),
                timeout=max(timeout, 1.0),
            )

    def _connected(self, connection: Any) -> None:
        """A new connection: drop what a restarted Redis brought back from disk
        (:data:`lua.CLAIM`) before the connection serves any read."""
        connection.on_connect()
        connection.send_command("INFO", "server")
        try:
            info = connection.read_response()
        except ResponseError as exc:  # not allowed to this user, or renamed away
            if not self._no_info_warned:
                self._no_info_warned = True
                logger.warning(
                    "cache: INFO refused: entries a restarted Redis brings back from its "
                    "RDB/AOF file are not dropped (allow INFO, or run the cache's Redis "
                    "without persistence)",
                    error=str(exc),
                )
            return
        text = info.decode() if isinstance(info, bytes) else str(info)
        run = next(
            (line[7:].strip() for line in text.splitlines() if line.startswith("run_id:")), ""
        )
        if not run:
            raise RedisError("cache: INFO server gave no run_id")
        ttl_ms = int(self.version_ttl * 1000)
        reply = _eval(connection, lua.CLAIM, self.prefix, run, ttl_ms)
        if reply[0] == 0:
            return
        names = [name.decode() for name in reply[1]]
        for name in names:
            while _eval(connection, lua.WIPE_CHUNK, self.prefix, name, self.wipe_chunk)[1]:
                pass
        _eval(connection, lua.CLAIMED, self.prefix, run)
        if names:
            logger.warning(
                "cache: the Redis server restarted; the entries it kept were dropped",
                projections=names,
            )

    def eviction_risk(self) -> str | None:
        """A Redis with a ``maxmemory`` and a policy other than ``noeviction`` may evict a
        tag set, leaving its entries stale until their TTL. ``None`` when it cannot evict,
        or cannot be asked (down, or INFO refused): the cache copes with that by itself."""
        try:
            memory = self.client.info("memory")
        except RedisError:
            return None
        policy = str(memory.get("maxmemory_policy", "noeviction"))
        limit = int(memory.get("maxmemory", 0) or 0)
        if limit == 0 or policy == "noeviction":
            return None
        return (
            f"the cache's Redis may evict keys (maxmemory {limit} bytes, maxmemory-policy "
            f"{policy}): an evicted tag set leaves its entries un-invalidatable, stale until "
            f"their ttl; set maxmemory-policy noeviction, or give the cache a Redis of its own"
        )

    # -- reads -----------------------------------------------------------------------

    def get_or_load(
        self,
        projection: str,
        key: str,
        tags: Iterable[str],
        load: Callable[[], Any],
        *,
        ttl: float | None = None,
    ) -> Any:
        if ":" in projection:
            check_projection(projection)
        entry = f"{self.prefix}e:{projection}:{key}"
        near = self.near
        if near is not None:
            blob = near.get(entry)
            if blob is not None:
                self.hooks.hit(projection)
                return loads(blob)
        if self._down_until > time.monotonic():
            return self._fallback(projection, load, self._last_error)
        ticket = near.begin(entry) if near is not None else None
        try:
            # Without a live near cache most reads hit Redis: a plain GET first (twice as
            # fast as a script). With one, reaching Redis mostly means a miss: go straight
            # to the script, which reads the entry too.
            found = None if ticket is not None else self.client.get(entry)
            if found is None:
                reply = self._begin(args=[self.prefix, projection, key, self.lock_lease_ms])
                found = reply[1] if reply[0] == 1 else None
        except RedisError as exc:
            if near is not None:
                near.end(entry, ticket)
            return self._fallback(projection, load, exc)
        if found is not None:
            expires, _, blob = found.partition(b"|")
            if near is not None:
                near.fill(entry, ticket, blob, int(expires))
            self.hooks.hit(projection)
            return loads(blob)
        if near is not None:
            near.end(entry, ticket)
        self.hooks.miss(projection)
        since, locked = reply[1], reply[2] == 1
        try:  # a LazyTags is worked out here, on the miss only
            tag_names = spelled_tags(tag_list(tags))
        except BaseException:
            if locked:
                self._unlock(projection, key)
            raise
        lifetime_ms = max(1, int(self._lifetime(ttl) * 1000))
        started = time.monotonic()

        def fill() -> tuple[bytes, bool]:
            if not locked:
                waited = self._await_leader(projection, key)
                if waited is not None:
                    return waited, True
            try:
                fresh = dumps(projection, key, load())
            except BaseException:
                if locked:
                    self._unlock(projection, key)
                raise
            if time.monotonic() - started >= self.version_ttl / 2:
                # the tag versions that guard this store may have expired meanwhile
                if locked:
                    self._unlock(projection, key)
                return fresh, False
            args = [self.prefix, projection, key, since, lifetime_ms, fresh, "1" if locked else "0"]
            try:
                return fresh, self._store(args=args + tag_names) == 1
            except RedisError as exc:
                self._trouble(projection, exc)
                return fresh, False

        return loads(self._flights.run(entry, self.single_flight_wait, fill, lead=locked))

    def _await_leader(self, projection: str, key: str) -> bytes | None:
        """Another loader holds the key's lock: poll for its value until it stores it, gives
        up (lock gone, nothing stored) or ``single_flight_wait`` runs out."""
        entry = f"{self.prefix}e:{projection}:{key}"
        lock = f"{self.prefix}l:{projection}:{key}"
        deadline = time.monotonic() + self.single_flight_wait
        pause = 0.001
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.02)
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    found, locked = pipe.get(entry).exists(lock).execute()
            except RedisError:
                return None
            if found is not None:
                return bytes(found.partition(b"|")[2])
            if not locked:
                return None

    def _unlock(self, projection: str, key: str) -> None:
        try:
            self.client.delete(f"{self.prefix}l:{projection}:{key}")
        except RedisError:
            pass  # the lease runs out

    def _fallback(
        self, projection: str, load: Callable[[], Any], error: BaseException | None
    ) -> Any:
        self._trouble(projection, error)
        return loads(dumps(projection, "-", load()))

    def _trouble(self, projection: str, error: BaseException | None) -> None:
        """Redis failed: serve from the read model for ``retry_after``; warn now and then."""
        now = time.monotonic()
        if error is not None and self._down_until <= now:
            self._last_error = error
            self._down_until = now + self.retry_after
        error = error or CacheError("Redis unreachable")
        self.hooks.fallback(projection, error)
        if now - self._warned_at >= _WARN_EVERY:
            logger.warning(
                "cache unreachable; reading from the read model",
                projection=projection,
                error=describe_error(error),
                suppressed=self._suppressed,
            )
            self._warned_at = now
            self._suppressed = 0
        else:
            self._suppressed += 1

    # -- invalidation ----------------------------------------------------------------

    def invalidate(self, projection: str, tags: Iterable[str]) -> None:
        """Refuse every load of ``tags`` begun before now and delete their entries: in the
        same script while they number at most ``wipe_chunk``, else ``wipe_chunk`` per script
        (with what an invalidation cut short left). Raises :class:`CacheError` (to be
        redone) if Redis fails meanwhile."""
        check_projection(projection)
        given = tag_list(tags)
        if not given:
            return
        tag_names = spelled_tags(given)
        ttl_ms = int(self.version_ttl * 1000)
        try:
            left = 0
            for start in range(0, len(tag_names), _TAGS_PER_CALL):
                chunk = tag_names[start : start + _TAGS_PER_CALL]
                args = [self.prefix, projection, ttl_ms, self.wipe_chunk, *chunk]
                _, left = _even_out_of_memory(self._invalidate, self._invalidate_oom, args)
            if left:
                self._flights.bump()
                self._empty_set_aside(projection)
        except RedisError as exc:
            raise CacheError(f"cache: invalidating {projection} failed: {exc!r}") from exc
        self._settle()
        self.hooks.invalidated(projection, len(given))

    def invalidate_projection(self, projection: str) -> None:
        """Drop every entry of ``projection``: one short script refuses every load begun
        before it, then scripts of at most ``wipe_chunk`` entries each delete the entries
        (also those a wipe cut short left), until none is left. Returns once they are all
        gone; raises :class:`CacheError` (the wipe is to be redone) if Redis fails meanwhile."""
        check_projection(projection)
        try:
            args = [self.prefix, projection, int(self.version_ttl * 1000)]
            _even_out_of_memory(self._wipe, self._wipe_oom, args)
            self._flights.bump()
            self._empty_set_aside(projection)
        except RedisError as exc:
            raise CacheError(f"cache: invalidating {projection} failed: {exc!r}") from exc
        self._settle()

    def _empty_set_aside(self, projection: str) -> None:
        """Delete the entries of the sets invalidations set aside (also those of one cut
        short), ``wipe_chunk`` per script, until none is left."""
        while True:
            _, left = self._wipe_chunk(args=[self.prefix, projection, self.wipe_chunk])
            if left == 0:
                break

    def _settle(self) -> None:
        self._flights.bump()
        if self.near is not None:
            self.near.sync()

    def sync(self) -> None:
        """Make this process's near cache reflect every invalidation made anywhere before
        this call (one round trip); without it, that happens when Redis's push arrives."""
        if self.near is not None:
            self.near.sync()

    def close(self) -> None:
        if self.near is not None:
            self.near.close()
        self.client.close()


def _even_out_of_memory(script: Any, oom_script: Any, args: list[Any]) -> Any:
    """Run ``script``; if Redis refuses it for want of memory (``maxmemory`` reached under
    ``noeviction``, where the cache's own stores fail too), run ``oom_script`` (the same with
    the ``allow-oom`` flag): an invalidation must not wait for memory that only the TTLs of
    the entries it was to delete would free."""
    try:
        return script(args=args)
    except OutOfMemoryError:
        return oom_script(args=args)


def _eval(connection: Any, script: str, *args: Any) -> Any:
    """``script`` run on ``connection`` (one being set up), with the ``allow-oom`` flag if
    Redis refuses it for want of memory (as :func:`_even_out_of_memory`)."""
    try:
        connection.send_command("EVAL", script, 0, *args)
        return connection.read_response()
    except OutOfMemoryError:
        connection.send_command("EVAL", lua.ALLOW_OOM + script, 0, *args)
        return connection.read_response()
