"""A worker whose handler is stuck where it cannot be interrupted exits, to be restarted.

A handler blocked in C outside its store (a socket read without a timeout) survives
``engine.handler_timeout``: its Dramatiq thread, and the lane's messages it holds, would
wait for ever. Once it has been stuck ``engine.stuck_exit_after`` past the bound,
:class:`StuckExit` (the engine's ``on_stuck``) logs the projection and event, then stops the
worker as SIGTERM does: the other threads finish their batch in hand, the messages not
started go back to the broker. The stuck thread cannot stop, so :func:`run_worker` raises
:class:`HandlerStuck` and the process exits with :data:`EXIT_STUCK` (4) for its supervisor to
restart it. Nothing is lost: the stuck batch was never committed (its connection closes
with the process, and a handler that came back late fails its event all the same), its
message is redelivered (RabbitMQ at once, Redis when Dramatiq requeues a dead worker's
messages) and the new worker's sweep re-sends the lane anyway; checkpoints make it apply
each event once. Should the stop itself hang, the process exits with the same code
``shutdown.grace`` + :data:`EXIT_MARGIN` seconds later. The stuck attempt is counted
first, and a worker starting parks an event stuck ``engine.max_attempts`` times
(:mod:`projections.stuck_events`).
"""

from __future__ import annotations

import threading

import structlog

from outbox.errors import ReadmodelError
from projections.handler_timeout import StuckHandler
from projections.log_aside import log_aside
from workers.cli_support import EXIT_STUCK
from workers.signals import EXIT_MESSAGE_WAIT, exit_now

logger = structlog.get_logger("readmodel.worker")

EXIT_MARGIN = 5.0
"""Seconds past ``shutdown.grace`` after which a stuck worker that has not stopped exits."""


class HandlerStuck(ReadmodelError):
    """A handler stayed stuck past ``engine.stuck_exit_after``: the worker exits (code 4)."""


class StuckExit:
    """The engine's ``on_stuck`` in a worker process: sets ``stop`` once, and exits the
    process if the stop has not ended it ``grace`` + :data:`EXIT_MARGIN` seconds later."""

    def __init__(self, stop: threading.Event, grace: float) -> None:
        self.stop = stop
        self.grace = grace
        self.stuck: StuckHandler | None = None
        self._lock = threading.Lock()

    def __call__(self, stuck: StuckHandler) -> None:
        with self._lock:
            if self.stuck is not None:
                return
            self.stuck = stuck
        timer = threading.Timer(self.grace + EXIT_MARGIN, exit_now, (EXIT_STUCK, self.message()))
        timer.daemon = True
        timer.start()
        try:
            # Said first when stderr is read; the stop waits for it at most a second.
            log_aside(
                logger.error,
                "handler stuck past engine.stuck_exit_after; exiting to be restarted",
                wait=EXIT_MESSAGE_WAIT,
                projection=stuck.projection,
                source=stuck.source,
                position=stuck.position,
                event_type=stuck.event_type,
                seconds=stuck.seconds,
                attempts=stuck.attempts,
                exit_code=EXIT_STUCK,
            )
        finally:
            self.stop.set()

    def message(self) -> str:
        stuck = self.stuck
        if stuck is None:
            return ""
        return (
            f"{stuck.projection}: handler of {stuck.event_type} at {stuck.source}:"
            f"{stuck.position} stuck for {stuck.seconds:g}s, past engine.handler_timeout and "
            f"engine.stuck_exit_after (blocked where it cannot be interrupted); exiting so "
            f"that the worker is restarted (its messages go back to the queue)"
        )
