"""A process forked after :func:`workers.signals.stop_on_signals` starts as a process that
never called it: SIGTERM kills it by default. It inherited the no-op handler and the wakeup
fd, but not the watcher thread: its SIGTERM was written to the parent's pipe, so it ran on
and its parent stopped instead."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import os, signal, time
    from workers.signals import stop_on_signals

    stop = stop_on_signals()
    child = os.fork()
    if child == 0:
        time.sleep(10)
        os._exit(0)
    time.sleep(0.5)
    os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    time.sleep(0.5)
    print(os.waitstatus_to_exitcode(status), stop.is_set())
    """
)


def test_sigterm_to_a_forked_child_kills_it_and_leaves_the_parent_running() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines()[-1].split() == ["-15", "False"], done.stdout + done.stderr
