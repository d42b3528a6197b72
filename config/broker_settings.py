"""``[broker]``: where projection work is queued."""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, field_validator

from config.checks import Duration, _authority_checked, _client_url_checked, _Strict
from config.secrets import reveal


class BrokerSettings(_Strict):
    """Where projection work is queued: Redis (default for servers), RabbitMQ, or in-process."""

    url: str = Field(
        "memory://",
        description="memory:// (in-process, embedded), redis://host:6379/0 or amqp://user:pw@host/",
    )
    queue: str = Field("readmodel", description="Dramatiq queue name")
    namespace: str = Field(
        "dramatiq",
        description=(
            "Redis only: the prefix of Dramatiq's keys (queues, heartbeats), to keep readmodel "
            "apart from other Dramatiq apps on the same Redis database"
        ),
    )
    worker_timeout: Duration = Field(
        timedelta(milliseconds=100),
        description=(
            "how long an idle worker waits before polling again; on Redis an enqueue wakes "
            "it at once, so this only bounds the delay of a lost wake-up"
        ),
    )
    middleware: list[str] = Field(
        default_factory=list,
        description="extra Dramatiq middleware classes, as 'module:Class'",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = reveal(value)
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in {"memory", "redis", "rediss", "amqp", "amqps"}:
            raise ValueError("expected memory://, redis://, rediss://, amqp:// or amqps://")
        return _client_url_checked(_authority_checked(value))

    @field_validator("queue", "namespace")
    @classmethod
    def _queue(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value):
            raise ValueError("use letters, digits, '.', '_' or '-'")
        return value
