"""A bound on how long one event's handler may run (``engine.handler_timeout``).

The engine sets the bound for the thread applying a batch (:func:`handler_limit`); a store
runs each event's handler inside :func:`bounded`. Past the bound a watchdog thread first
cancels what the store's connection is waiting on (a row lock, a slow query: a wait in
the driver that Python cannot interrupt), then, if the handler is still not back a second
later, raises :class:`HandlerTimeout` into its thread as Dramatiq's ``TimeLimit`` does (at
the thread's next Python instruction: an endless loop, a sleep in steps). However the
handler then comes back, its event fails with :class:`HandlerTimeout`: the batch's
transaction rolls back and the engine retries the event, then parks it as any failing one.

The watchdog writes its lines aside (:mod:`projections.log_aside`): a stderr nobody reads
must not hold it up on its way to the raise and ``on_stuck``.

A thread blocked outside Python and outside its store (a socket read without a timeout
in the handler's own code) cannot be interrupted in-process: it is logged as such, and
its lane waits until it returns or the worker is restarted. Given a ``stuck_after`` bound
(``engine.stuck_exit_after``) and an ``on_stuck`` action, the watchdog calls the action
once the handler has been stuck that long past its bound (a worker process's action exits
it, to be restarted: ``workers/stuck_exit.py``); plain Python code using the engine sets none.

The engine's :class:`TimeoutHooks` are told when a handler passes its bound and when such a
handler comes back (``workers/metrics_timeouts.py`` counts the timeouts and the handlers
running past their bound, so a lane held by one is seen without reading the logs).
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import structlog

from outbox.envelope import Envelope
from outbox.error_text import describe_error
from projections.log_aside import log_aside

logger = structlog.get_logger("readmodel.projections")

ESCALATE_AFTER = 1.0
"""Seconds between cancelling the store's statement and raising into the handler's thread."""
STUCK_AFTER = 30.0
"""Seconds after the raise at which a handler still not back is logged as uninterruptible."""
TICK = 0.1


class TimeoutHooks:
    """Told of handlers past their bound (metrics); no-ops by default. Called from the
    watchdog thread (:meth:`handler_overdue`) and the handler's (:meth:`handler_back`)."""

    def handler_overdue(self, projection: str, thread: int) -> None:
        """A handler of ``projection`` ran past ``engine.handler_timeout`` (it is being
        interrupted, or cannot be) in the applying thread ``thread`` (its ident: one handler
        at a time per thread, so it tells which handler :meth:`handler_back` is about)."""

    def handler_back(self, projection: str, thread: int) -> None:
        """A handler :meth:`handler_overdue` told of came back (returned or interrupted)."""


@dataclass(frozen=True, slots=True)
class StuckHandler:
    """A handler still running ``stuck_after`` past its bound: what the ``on_stuck`` action
    is told (the event's place and type, never its payload)."""

    projection: str
    source: str
    position: int | None
    event_type: str
    seconds: float
    """How long the handler has been running."""
    event: Envelope | None = field(default=None, repr=False, compare=False)
    """The event itself (for the store to count the attempt; never logged)."""
    attempts: int | None = None
    """The event's attempts so far, this one counted (``None``: not counted)."""


OnStuck = Callable[[StuckHandler], None]


class HandlerTimeout(Exception):
    """An event's handler ran past ``engine.handler_timeout``."""

    def __init__(self, seconds: float | None = None) -> None:
        if seconds is None:  # raised bare by the watchdog: made in the handler's thread
            seconds = getattr(_limit, "seconds", None) or 0.0
        super().__init__(f"handler exceeded {seconds:g}s (engine.handler_timeout)")
        self.seconds = seconds


class _Slot:
    """The watch of one applying thread, armed for each event: the fields are written
    without a lock before ``armed`` is set, and read by the watchdog under ``lock`` only;
    disarming takes ``lock``, so no escalation can begin once it has returned."""

    __slots__ = (
        "armed",
        "cancel",
        "deadline",
        "event",
        "frame",
        "hooks",
        "lock",
        "next_at",
        "on_stuck",
        "projection",
        "seconds",
        "stage",
        "stuck_after",
        "target",
        "thread",
    )

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.lock = threading.Lock()
        self.armed = False
        # 1: statement cancelled, 2: raised into the thread, 3: logged as stuck, 4: on_stuck
        self.stage = 0
        self.seconds = self.deadline = self.next_at = 0.0
        self.stuck_after: float | None = None
        self.on_stuck: OnStuck | None = None
        self.projection = ""
        self.event: Envelope | None = None
        self.frame: FrameType | None = None
        self.cancel: Callable[[Any], None] | None = None
        self.target: Any = None
        self.hooks: TimeoutHooks | None = None

    def what(self) -> str:
        event = self.event
        if event is None:
            return self.projection
        return f"{self.projection}: {event.event_type} at {event.source}:{event.position}"


class _Watchdog:
    """One daemon thread per process, watching the slots of every applying thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._thread: threading.Thread | None = None

    def slot(self) -> _Slot:
        """A new slot for this thread, watched from now on."""
        slot = _Slot()
        with self._lock:
            self._slots = [s for s in self._slots if _alive(s.thread)] + [slot]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="readmodel-handler-timeout", daemon=True
                )
                self._thread.start()
        return slot

    def _run(self) -> None:
        while True:
            time.sleep(TICK)
            now = time.monotonic()
            for slot in self._slots:
                if not slot.armed or slot.next_at > now:
                    continue
                with slot.lock:
                    if slot.armed and slot.next_at <= now:
                        try:
                            _escalate(slot, now)
                        except Exception as exc:  # the watchdog outlives any one handler
                            log_aside(
                                logger.error,
                                "handler timeout",
                                handler=slot.what(),
                                error=describe_error(exc),
                            )


def _escalate(slot: _Slot, now: float) -> None:
    slot.stage += 1
    if slot.stage == 1:
        log_aside(
            logger.warning,
            "handler exceeded handler_timeout; interrupting it",
            handler=slot.what(),
            seconds=slot.seconds,
        )
        slot.next_at = now + ESCALATE_AFTER
        _tell(slot.hooks, "handler_overdue", slot.projection, slot.thread)
        if slot.cancel is not None:
            slot.cancel(slot.target)
    elif slot.stage == 2:
        slot.next_at = min(now + STUCK_AFTER, _give_up_at(slot))
        _raise_in(slot.thread, HandlerTimeout)
    elif not _inside(slot):
        _let_go(slot)
    elif slot.stage == 3:
        slot.next_at = _give_up_at(slot)
        log_aside(
            logger.error,
            "handler cannot be interrupted: blocked outside Python (e.g. a socket read "
            "without a timeout); its lane waits until it returns or the worker restarts",
            handler=slot.what(),
            seconds=round(now - slot.deadline + slot.seconds),
        )
    else:
        slot.next_at = float("inf")
        event = slot.event
        if slot.on_stuck is not None and event is not None:
            slot.on_stuck(
                StuckHandler(
                    slot.projection,
                    event.source,
                    event.position,
                    event.event_type,
                    round(now - slot.deadline + slot.seconds, 1),
                    event,
                )
            )


def _inside(slot: _Slot) -> bool:
    """Whether the slot's thread still runs in the frame that armed it (a raise landing in
    :class:`bounded`'s own exit, before it disarmed, leaves the slot armed behind a thread
    gone on to other work)."""
    frame = sys._current_frames().get(slot.thread)
    while frame is not None:
        if frame is slot.frame:
            return True
        frame = frame.f_back
    return slot.frame is None


def _let_go(slot: _Slot) -> None:
    """Disarm a slot whose handler is back, though its exit was cut short."""
    slot.armed = False
    slot.next_at = float("inf")
    slot.event = slot.target = slot.frame = None
    log_aside(
        logger.info, "handler back after its bound's exit was interrupted", handler=slot.projection
    )
    _tell(slot.hooks, "handler_back", slot.projection, slot.thread)


def _give_up_at(slot: _Slot) -> float:
    """When ``on_stuck`` is called for a handler not back (never without both)."""
    if slot.stuck_after is None or slot.on_stuck is None:
        return float("inf")
    return slot.deadline + slot.stuck_after


def _tell(hooks: TimeoutHooks | None, what: str, projection: str, thread: int) -> None:
    """Call hook ``what``; a hook's failure (metrics) is logged, never the handler's."""
    if hooks is None:
        return
    try:
        getattr(hooks, what)(projection, thread)
    except Exception as exc:
        log_aside(
            logger.warning, "handler timeout hook failed", hook=what, error=describe_error(exc)
        )


def _alive(thread: int) -> bool:
    return any(t.ident == thread for t in threading.enumerate())


def _raise_in(thread: int, exc: type[BaseException]) -> None:
    """Raise ``exc`` in ``thread`` at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(exc))


def _absorb_raise() -> None:
    """Let the watchdog's raise into this thread, if not delivered yet, land here, and drop
    it. Withdrawing it instead (``PyThreadState_SetAsyncExc(thread, NULL)``) leaves CPython's
    asynchronous-exception signal set for good (only a delivery clears it): every thread
    would then take the interpreter's slow path at each check, and one with a trace
    function set (a debugger, coverage) spin for ever at its next call."""
    try:
        for _ in range(2):
            pass  # a backward jump: the interpreter delivers a pending raise here
    except HandlerTimeout:
        pass


_WATCHDOG = _Watchdog()
_limit = threading.local()


@contextmanager
def handler_limit(
    seconds: float | None,
    hooks: TimeoutHooks | None = None,
    stuck_after: float | None = None,
    on_stuck: OnStuck | None = None,
) -> Iterator[None]:
    """Bound every handler that this thread runs in the block by ``seconds`` (``None``:
    no bound), telling ``hooks`` of those that pass it, and calling ``on_stuck`` (from the
    watchdog thread) for one still not back ``stuck_after`` seconds past the bound."""
    previous = tuple(getattr(_limit, name, None) for name in _LIMITS)
    _limit.seconds, _limit.hooks, _limit.stuck_after, _limit.on_stuck = (
        seconds,
        hooks,
        stuck_after,
        on_stuck,
    )
    try:
        yield
    finally:
        _limit.seconds, _limit.hooks, _limit.stuck_after, _limit.on_stuck = previous


_LIMITS = ("seconds", "hooks", "stuck_after", "on_stuck")


class bounded:  # noqa: N801 - used as a ``with`` statement, as contextlib's are
    """``with bounded(projection, event, cancel, target):`` runs one handler under this
    thread's bound and raises :class:`HandlerTimeout` when it was passed, whatever the
    handler returned or raised. ``cancel(target)``, called from another thread, interrupts
    what the store's connection is waiting on. A class, not a generator, and one slot per
    thread armed again for each event: it runs for every event."""

    __slots__ = ("_cancel", "_event", "_projection", "_slot", "_target")

    def __init__(
        self,
        projection: str,
        event: Envelope,
        cancel: Callable[[Any], None] | None = None,
        target: Any = None,
    ) -> None:
        self._projection = projection
        self._event = event
        self._cancel = cancel
        self._target = target
        self._slot: _Slot | None = None

    def __enter__(self) -> None:
        seconds = getattr(_limit, "seconds", None)
        if not seconds:
            return
        slot = getattr(_limit, "slot", None)
        if slot is None:
            slot = _limit.slot = _WATCHDOG.slot()
        with slot.lock:  # the watchdog may be letting go of the slot's last handler
            slot.seconds = seconds
            slot.deadline = slot.next_at = time.monotonic() + seconds
            slot.stage = 0
            slot.projection, slot.event = self._projection, self._event
            slot.frame = sys._getframe(1)
            slot.cancel, slot.target = self._cancel, self._target
            slot.hooks = getattr(_limit, "hooks", None)
            slot.stuck_after = getattr(_limit, "stuck_after", None)
            slot.on_stuck = getattr(_limit, "on_stuck", None)
            slot.armed = True
        self._slot = slot

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        slot = self._slot
        if slot is None:
            return
        try:
            passed = self._disarm(slot)
        except HandlerTimeout:
            # The watchdog's raise, landing here once the handler was back: it raises once
            # per event, and disarming withdraws one not delivered, so this runs through.
            self._disarm(slot)
            passed = True
        if passed:
            _tell(slot.hooks, "handler_back", self._projection, slot.thread)
        if passed and (kind is None or issubclass(kind, Exception)):
            raise HandlerTimeout(slot.seconds) from exc

    def _disarm(self, slot: _Slot) -> bool:
        """Disarm the slot; whether its handler passed the bound (idempotent)."""
        with slot.lock:
            passed = slot.armed and slot.stage > 0
            if slot.armed and slot.stage >= 2:
                _absorb_raise()  # one not delivered yet: this raises its own
            slot.armed = False
            slot.event = slot.target = slot.frame = None
        self._slot = None
        return passed
