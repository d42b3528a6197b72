"""The confirmation question of the commands that change things (``parked retry|skip|purge``,
``replay``, ``outbox binary-ids``): click's prompt answers Ctrl-C and the end of input
alike ("Aborted.", exit 1); here Ctrl-C exits 130 and the end of input 1, each saying that
nothing changed, as does Ctrl-C while the command reads what to do before asking."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from workers.cli_support import EXIT_FAILURE, EXIT_INTERRUPTED, err, fail

INTERRUPTED_AT_THE_QUESTION = "interrupted (Ctrl-C) at the question: nothing changed"
NO_ANSWER = "no answer (end of input): nothing changed"


@contextmanager
def changing_nothing() -> Iterator[None]:
    """Ctrl-C while the block reads what to do (before any change): say that nothing
    changed, exit 130, as a run stopped later does."""
    try:
        yield
    except KeyboardInterrupt:
        err.print()
        raise fail("interrupted (Ctrl-C): nothing changed", EXIT_INTERRUPTED) from None


def confirm(yes: bool, question: str, *, declined: str = "aborted: nothing changed") -> None:
    """Ask ``question`` on stderr unless ``yes``: a no (the default) exits 1 with
    ``declined``, the end of input (Ctrl-D) exits 1, Ctrl-C exits 130, each saying that
    nothing changed."""
    while not yes:
        try:
            err.print(f"{question} [y/N]: ", end="", markup=False, highlight=False, soft_wrap=True)
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            err.print()
            raise fail(INTERRUPTED_AT_THE_QUESTION, EXIT_INTERRUPTED) from None
        if not line:
            err.print()
            raise fail(NO_ANSWER, EXIT_FAILURE)
        answer = line.strip().lower()
        if answer in ("y", "yes"):
            return
        if answer in ("", "n", "no"):
            raise fail(declined, EXIT_FAILURE)
        err.print("answer y or n", highlight=False)
