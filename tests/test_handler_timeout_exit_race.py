"""The watchdog's raise landing in the bound's own exit, after the handler came back.

The watchdog raises :class:`HandlerTimeout` into a handler's thread at that thread's next
Python instruction; when the handler came back just then, that instruction may be one of
``bounded.__exit__``'s own. The exception then left the exit before it had disarmed the
thread's slot: it said "handler exceeded 0s" (the class raised bare), the handler was never
told back to the metrics, and the watchdog, still seeing the handler armed, logged it as
uninterruptible and called ``on_stuck`` (a worker exits with code 4) for a thread long back
at other work. Each case here delivers the raise at another point of the exit path, as the
interpreter would (a trace function raising there), and checks the outcome."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

from outbox.envelope import Envelope
from projections import handler_timeout
from projections.handler_timeout import (
    HandlerTimeout,
    StuckHandler,
    TimeoutHooks,
    bounded,
    handler_limit,
)

BOUND = 0.05
STUCK_AFTER = 0.6


class _Hooks(TimeoutHooks):
    def __init__(self) -> None:
        self.told: list[str] = []

    def handler_overdue(self, projection: str, thread: int) -> None:
        self.told.append("overdue")

    def handler_back(self, projection: str, thread: int) -> None:
        self.told.append("back")


def _event() -> Envelope:
    return Envelope(
        event_id="e-1",
        source="shop",
        position=7,
        aggregate_type="order",
        aggregate_id="o-1",
        event_type="OrderPlaced",
        payload={},
    )


_UNTIL = {"__exit__": "self._disarm(slot)", "_disarm": "_raise_in("}
"""Where a raise can still land in each function of the exit path: up to the disarm's
withdrawal of one not delivered (none is pending after it)."""


def _exit_path() -> list[CodeType]:
    """The code objects the exit runs in the handler's thread (the hooks excluded)."""
    return [bounded.__exit__.__code__] + [
        value.__code__
        for name, value in vars(bounded).items()
        if name.startswith("_disarm") and callable(value)
    ]


def _points() -> Iterator[tuple[str, int]]:
    """``(function, line)`` for each line the exit runs until a raise cannot land any more
    (``-1``: at the function's call, before its first line)."""
    for code in _exit_path():
        yield code.co_name, -1
        lines, first = inspect.getsourcelines(code)
        for number, text in enumerate(lines[1:], start=first + 1):
            statement = text.strip()
            if statement and not statement.startswith(("#", '"""', "return")):
                yield code.co_name, number
            if _UNTIL.get(code.co_name, "\0") in statement:
                break


def _raise_at(name: str, line: int) -> Any:
    """A trace function raising ``HandlerTimeout`` (the class, as the watchdog delivers it)
    once, at ``line`` of function ``name`` of the exit path (``-1``: at its call)."""
    codes = {code.co_name: code for code in _exit_path()}
    fired: list[bool] = []

    def local(frame: FrameType, what: str, _: Any) -> Any:
        if not fired and what == "line" and frame.f_lineno == line:
            fired.append(True)
            raise HandlerTimeout
        return local

    def trace(frame: FrameType, what: str, _: Any) -> Any:
        if fired or frame.f_code is not codes[name]:
            return None
        if line == -1:
            fired.append(True)
            raise HandlerTimeout
        return local

    return trace, fired


def _apply_one(trace: Any, fired: list[bool]) -> tuple[BaseException | None, list[bool]]:
    """One event's handler, running past its bound, as a store's apply loop runs it: the
    frame that armed the bound is gone once this returns."""
    limit = bounded("totals", _event())
    limit.__enter__()
    delivered = False
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except HandlerTimeout:
        delivered = True  # the watchdog's own raise, in the handler
    assert delivered, "the watchdog never raised into the handler"
    raised: BaseException | None = None
    sys.settrace(trace)
    try:
        limit.__exit__(None, None, None)
    except BaseException as exc:
        raised = exc
    finally:
        sys.settrace(None)
    return raised, fired


@pytest.mark.parametrize(("name", "line"), list(_points()))
def test_a_raise_landing_in_the_exit_disarms_and_names_the_bound(
    name: str, line: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_timeout, "ESCALATE_AFTER", 0.1)
    hooks = _Hooks()
    stuck: list[StuckHandler] = []
    trace, fired = _raise_at(name, line)
    with handler_limit(BOUND, hooks, STUCK_AFTER, stuck.append):
        raised, fired = _apply_one(trace, fired)
    assert fired, f"no raise delivered at {name}:{line}"
    assert isinstance(raised, HandlerTimeout)
    assert str(raised) == f"handler exceeded {BOUND:g}s (engine.handler_timeout)"
    time.sleep(BOUND + STUCK_AFTER + 0.5)
    assert stuck == [], "a handler back at other work was called stuck"
    assert hooks.told == ["overdue", "back"]


def test_a_bare_handler_timeout_names_the_bound_of_its_thread() -> None:
    """The watchdog raises the class; it is made in the handler's thread, which knows its
    bound."""
    seen: list[str] = []

    def run() -> None:
        with handler_limit(2.5):
            seen.append(str(HandlerTimeout()))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == ["handler exceeded 2.5s (engine.handler_timeout)"]


_AFTER_A_TIMEOUT = """
import sys, threading, time
from outbox.envelope import Envelope
from projections import handler_timeout
from projections.handler_timeout import HandlerTimeout, bounded, handler_limit

handler_timeout.ESCALATE_AFTER = 0.1
event = Envelope(event_id="e", source="shop", position=1, aggregate_type="order",
                 aggregate_id="o", event_type="OrderPlaced", payload={})
with handler_limit(0.05):
    try:
        with bounded("totals", event):
            while True:  # a handler past its bound, interrupted by the watchdog's raise
                time.sleep(0.01)
    except HandlerTimeout:
        pass

def traced() -> str:
    return "called"

sys.settrace(lambda *_: None)  # a debugger, a coverage run
print(traced(), flush=True)
"""


def test_a_handler_timeout_leaves_no_signal_behind_that_hangs_a_traced_call(
    tmp_path: Path,
) -> None:
    """CPython 3.11 clears the interpreter's "asynchronous exception" signal only when it
    delivers one: withdrawing a raise (``PyThreadState_SetAsyncExc(thread, NULL)``) left it
    set for good, so every thread of the worker took the interpreter's slow path at each
    check from then on, and one with a trace function set (a debugger, coverage) spun for
    ever at its next function call. Before: this child never printed."""
    script = tmp_path / "after_a_timeout.py"
    script.write_text(_AFTER_A_TIMEOUT)
    root = str(Path(__file__).resolve().parent.parent)
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": root},
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the traced call never returned (the signal left set spins it)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "called"
