"""Dramatiq's Redis ``dispatch`` script without ``KEYS``.

Dramatiq's queue maintenance (on a random 0.1% of broker calls) gives the unacknowledged
messages of each dead worker (one whose heartbeat is older than the heartbeat timeout: every
process that ever used the broker, relays, sweepers and CLI commands included, once it has
exited) back to their queue, then asks ``KEYS <namespace>:__acks__.<worker>*`` whether the
worker holds messages of another queue before it forgets the worker. ``KEYS`` walks every key
of the database inside the script: on a Redis shared with the caches (millions of keys) each
dead worker blocks every client of that Redis for as long as the walk takes.

Here a worker's fetch also records the queue in ``<namespace>:__ack_queues__.<worker>`` (a set
of queue names), and maintenance forgets a dead worker once that set is empty and no ack set of
the queue or its delay queue remains (the latter covers workers of a version that kept no
set): a few O(1) calls instead of a walk of the keyspace.
"""

from __future__ import annotations

import dramatiq
import structlog
from dramatiq.brokers import redis as dramatiq_redis

logger = structlog.get_logger("readmodel.worker")

_KEYS_CHECK = """\
        local ack_queues = redis.call("keys", dead_worker_acks .. "*")
        if not next(ack_queues) then
            redis.call("zrem", heartbeats, dead_worker)
        end
"""

_SET_CHECK = """\
        local dead_worker_queues = namespace .. ":__ack_queues__." .. dead_worker
        redis.call("srem", dead_worker_queues, queue_name)
        local family_acks = dead_worker_acks .. "." .. queue_canonical_name
        if redis.call("scard", dead_worker_queues) == 0
            and redis.call("exists", family_acks, family_acks .. ".DQ") == 0 then
            redis.call("zrem", heartbeats, dead_worker)
            redis.call("del", dead_worker_queues)
        end
"""

_FETCHED = """\
    if next(message_ids) ~= nil then
        return redis.call("hmget", queue_messages, unpack(message_ids))
"""

_FETCHED_RECORDED = """\
    if next(message_ids) ~= nil then
        redis.call("sadd", namespace .. ":__ack_queues__." .. worker_id, queue_name)
        return redis.call("hmget", queue_messages, unpack(message_ids))
"""


def without_keys(script: str) -> str | None:
    """``script`` with its ``KEYS`` call replaced; ``None`` when it is not the script this
    module knows (another dramatiq version's)."""
    for old, new in ((_KEYS_CHECK, _SET_CHECK), (_FETCHED, _FETCHED_RECORDED)):
        if script.count(old) != 1:
            return None
        script = script.replace(old, new)
    return script


def dispatch_script() -> str:
    """The ``dispatch`` script :class:`workers.redis_broker.WakingRedisBroker` registers:
    dramatiq's own, without ``KEYS`` where this module knows it; as it is (warned once)
    where another dramatiq version changed it: its maintenance then walks the keyspace, as
    dramatiq's always did, rather than readmodel refusing to start."""
    global _warned
    script = dramatiq_redis._scripts["dispatch"].decode()
    replaced = without_keys(script)
    if replaced is not None:
        return replaced
    if not _warned:
        _warned = True
        logger.warning(
            "dramatiq's Redis dispatch script is not the one readmodel knows; its queue "
            "maintenance runs KEYS (workers/redis_dispatch.py follows dramatiq 2.x)",
            dramatiq=dramatiq.__version__,
        )
    return script


_warned = False
