"""``[cache]``: the query cache."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from config.checks import Duration, _authority_checked, _client_url_checked, _Strict
from config.secrets import reveal


class CacheSettings(_Strict):
    """The query cache: cache-aside reads, invalidated by tag from every applied batch."""

    url: str = Field(
        "",
        description="'' (no cache), memory:// (in-process, one process only) or "
        "redis://host:6379/1 (shared by every process)",
    )
    key_prefix: str = Field(
        "readmodel:cache:", description="every Redis key of the cache starts with this"
    )
    ttl: Duration = Field(timedelta(minutes=5), description="how long an entry lives at most")
    ttl_jitter: float = Field(
        0.1, ge=0, lt=1, description="each entry lives ttl * (1 +/- ttl_jitter), at random"
    )
    single_flight_wait: Duration = Field(
        timedelta(milliseconds=200),
        description="how long a reader waits for another reader loading the same key "
        "before it loads the key itself",
    )
    lock_lease: Duration = Field(
        timedelta(seconds=5),
        description="Redis: how long a loader's single-flight lock lasts if its process dies",
    )
    near_cache_size: int = Field(
        10_000,
        ge=0,
        description="Redis: entries kept in process memory, kept coherent by Redis client "
        "tracking (0 = off); memory://: the cache's size",
    )
    version_ttl: Duration = Field(
        timedelta(minutes=10),
        description="Redis: how long a tag remembers its last invalidation; a load that takes "
        "longer than half of this is served but not cached",
    )
    connect_timeout: Duration = Field(
        timedelta(milliseconds=250), description="Redis: connect and read timeout"
    )
    retry_after: Duration = Field(
        timedelta(seconds=1),
        description="Redis: after a failure, queries read the read model directly this long "
        "before trying Redis again",
    )
    redo_after: Duration = Field(
        timedelta(seconds=2),
        description="the sweeper redoes recorded invalidations older than this "
        "(a worker redoes all of them when it starts)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = reveal(value)
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if value and scheme not in {"memory", "redis", "rediss", "unix"}:
            raise ValueError("expected '', memory://, redis://, rediss:// or unix://")
        return _client_url_checked(_authority_checked(value))

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("a non-empty prefix without spaces, such as 'readmodel:cache:'")
        return value
