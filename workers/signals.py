"""SIGTERM and SIGINT as a stop event, handled on a thread of their own.

A Python signal handler runs on the main thread between two of its bytecodes, wherever
that thread is: inside structlog's write of a line (whose per-file lock is not reentrant),
inside an Event's or a Thread's start-up lock. A handler that logs, sets an Event or starts
a timer there waits for ever on a lock its own thread holds: a worker signalled while it
wrote "worker started" hung until it was killed. So the handler installed here does
nothing; the C-level handler writes the signal's number to the wakeup fd at once (even
while the main thread is in a long C call), and a watcher thread reading it logs, starts
the grace timer and sets the event.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

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


_target: _Target | None = None
_wakeup_write: int | None = None


def stop_on_signals(grace: float | None = None) -> threading.Event:
    """An event set by SIGTERM or SIGINT, for loops that finish their batch and exit.

    With ``grace`` (seconds, ``shutdown.grace``), a process still running that long after
    the signal exits anyway with code 1: whatever it had not committed is rolled back by
    the database and done again later. A second signal exits at once (128 + signal).
    A later call takes the signals over for its own event. Call it from the main thread.
    """
    global _target
    stop = threading.Event()
    _target = _Target(stop, grace)
    signal.set_wakeup_fd(_wakeup_fd(), warn_on_full_buffer=False)
    for signum in HANDLED:
        signal.signal(signum, _leave_to_the_watcher)
    return stop


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


def exit_now(code: int, message: str) -> None:
    """Exit with ``code`` after saying why; without a word after ``EXIT_MESSAGE_WAIT`` when
    stderr blocks (a log reader that stopped reading holds a write, and its lock)."""
    say = threading.Thread(target=_say, args=(message,), name="exit-message", daemon=True)
    say.start()
    say.join(EXIT_MESSAGE_WAIT)
    os._exit(code)


def _say(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.stdout.flush()
    sys.stderr.flush()


os.register_at_fork(after_in_child=_forget_in_child)
