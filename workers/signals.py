"""SIGTERM and SIGINT as a stop event, handled on a thread of their own.

A Python signal handler runs on the main thread between two of its bytecodes, wherever
that thread is: inside structlog's write of a line (whose per-file lock is not reentrant),
inside an Event's or a Thread's start-up lock. A handler that logs, sets an Event or starts
a timer there waits for ever on a lock its own thread holds: a worker signalled while it
wrote "worker started" hung until it was killed. So the handler installed here does
nothing; the C-level handler writes the signal's number to the wakeup fd at once (even
while the main thread is in a long C call), and a watcher thread reading it logs, starts
the grace timer and sets the event.

A process signalled while it still starts (connecting to its stores, a store slow to answer,
its start-up checks) has taken no work: it exits at once, code 0, rather than wait for a
start-up it would end straight away (and exit 1 past the grace if a store hangs). A
start-up write in flight is rolled back by its database and redone by the next start, as
after a kill. :func:`started` ends that phase, under a lock the exit holds: a signal is
either a start-up's exit or a graceful stop, never both.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import structlog
from rich.markup import escape

from workers.cli_support import EXIT_FAILURE, err

HANDLED = (signal.SIGTERM, signal.SIGINT)
EXIT_MESSAGE_WAIT = 1.0  # seconds


@dataclass(frozen=True)
class _Target:
    stop: threading.Event
    grace: float | None
    signalled: threading.Event = field(default_factory=threading.Event)
    starting: threading.Event = field(default_factory=threading.Event)


_target: _Target | None = None
_wakeup_write: int | None = None
_phase = threading.Lock()  # held while a signal ends a start-up, and by started()


def stop_on_signals(grace: float | None = None) -> threading.Event:
    """An event set by SIGTERM or SIGINT, for loops that finish their batch and exit.

    With ``grace`` (seconds, ``shutdown.grace``), a process still running that long after
    the signal exits anyway with code 1: whatever it had not committed is rolled back by
    the database and done again later. A second signal exits at once (128 + signal).
    A later call takes the signals over for its own event. Call it from the main thread.
    """
    return _install(_Target(threading.Event(), grace))


def _install(target: _Target) -> threading.Event:
    global _target
    _target = target
    signal.set_wakeup_fd(_wakeup_fd(), warn_on_full_buffer=False)
    for signum in HANDLED:
        signal.signal(signum, _leave_to_the_watcher)
    return target.stop


@contextmanager
def stop_from_start_up(grace: float | None = None) -> Iterator[threading.Event]:
    """:func:`stop_on_signals` for a process's whole run, its start-up included: a signal
    before :func:`started` exits at once, code 0 (the process has taken no work yet).

    Should the run end before :func:`started` (it failed starting), the signals are given
    back as they were: a command run in-process (tests) leaves no handler behind that would
    turn the host process's Ctrl-C into an exit 0. Call it from the main thread."""
    saved = {signum: signal.getsignal(signum) for signum in HANDLED}
    saved_target = _target
    saved_fd = signal.set_wakeup_fd(_wakeup_fd(), warn_on_full_buffer=False)
    target = _Target(threading.Event(), grace)
    target.starting.set()
    stop = _install(target)
    try:
        yield stop
    finally:
        with _phase:
            if target.starting.is_set():
                target.starting.clear()
                _give_back(saved, saved_target, saved_fd)


def _give_back(saved: dict[int, Any], target: _Target | None, wakeup_fd: int) -> None:
    global _target
    _target = target
    signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def started() -> None:
    """The process's start-up is over, it takes work from now on: a signal stops it
    gracefully (the stop event, the grace). A no-op once called, or without a start-up."""
    with _phase:
        if _target is not None:
            _target.starting.clear()


def _forget_in_child() -> None:
    """In a forked child: back to the signals of a process that never called
    :func:`stop_on_signals`. It has the handler and the wakeup fd, not the watcher thread:
    its signals went to the parent's pipe (stopping the parent) and it ignored them."""
    global _target, _wakeup_write
    if _wakeup_write is None:
        return
    signal.set_wakeup_fd(-1)
    os.close(_wakeup_write)
    for signum in HANDLED:
        if signal.getsignal(signum) is _leave_to_the_watcher:
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, default)
    _target = None
    _wakeup_write = None


def _leave_to_the_watcher(_signum: int, _frame: Any) -> None:
    """Installed so the signal does not kill the process; the watcher thread acts on it."""


def _wakeup_fd() -> int:
    """The write end of the pipe the watcher thread reads, made (and watched) once."""
    global _wakeup_write
    if _wakeup_write is None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        threading.Thread(target=_watch, args=(read_end,), name="signal-watch", daemon=True).start()
        _wakeup_write = write_end
    return _wakeup_write


def _watch(read_end: int) -> None:
    while True:
        for signum in os.read(read_end, 64):
            if signum in HANDLED and _target is not None:
                _on_signal(signal.Signals(signum), _target)


def _on_signal(sig: signal.Signals, target: _Target) -> None:
    with _phase:
        if target.starting.is_set():
            _exit_after(0, _say_stopped_while_starting, sig)  # the lock held till the end
    if target.signalled.is_set() or target.stop.is_set():
        exit_now(128 + sig, f"{sig.name} again: exiting now")
    target.signalled.set()
    if target.grace is not None:
        message = f"did not stop within {target.grace:g}s of {sig.name}; exiting"
        timer = threading.Timer(target.grace, exit_now, args=(EXIT_FAILURE, message))
        timer.daemon = True
        timer.start()
    # Off the watcher: the line may wait behind a write the main thread holds (a full stderr),
    # and the watcher must stay free to act on a second signal.
    threading.Thread(target=_stop, args=(sig, target), name="signal-stop", daemon=True).start()


def _stop(sig: signal.Signals, target: _Target) -> None:
    """Say why, then set the event (so "stopping" comes before what stopping logs); set it
    all the same when the line fails (a log reader gone: EPIPE)."""
    try:
        structlog.get_logger("readmodel").info(
            "stopping: finishing the batch in hand", signal=sig.name, grace_seconds=target.grace
        )
    finally:
        target.stop.set()


def exit_now(code: int, message: str) -> NoReturn:
    """Exit with ``code`` after saying why; without a word after ``EXIT_MESSAGE_WAIT`` when
    stderr blocks (a log reader that stopped reading holds a write, and its lock)."""
    _exit_after(code, _say, message)


def _exit_after(code: int, say: Callable[[Any], None], what: Any) -> NoReturn:
    """``say(what)``, given at most :data:`EXIT_MESSAGE_WAIT` seconds, then exit ``code``."""
    saying = threading.Thread(target=_flushed, args=(say, what), name="exit-message", daemon=True)
    saying.start()
    saying.join(EXIT_MESSAGE_WAIT)
    os._exit(code)


def _flushed(say: Callable[[Any], None], what: Any) -> None:
    try:
        say(what)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _say(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _say_stopped_while_starting(sig: signal.Signals) -> None:
    structlog.get_logger("readmodel").info(
        "stopped while starting: no work taken yet", signal=sig.name
    )


os.register_at_fork(after_in_child=_forget_in_child)
