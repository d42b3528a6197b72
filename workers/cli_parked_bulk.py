"""``readmodel parked retry|skip --projection P`` (and ``skip --malformed --source S``): many
parked entries at once, after asking (or ``--yes``), with a progress bar and a summary; a
run stopped partway by a store error or Ctrl-C prints what it did so far and what it left
parked, then the error."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from projections.engine_parked import no_handler
from projections.parked_bulk import Hold, Outcome, Selected, Selection, retry, select, skip
from workers.cli_confirm import changing_nothing, confirm
from workers.cli_support import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    err,
    fail,
    out,
    with_runtime,
)

BulkProjection = Annotated[
    str | None,
    typer.Option(
        "--projection",
        "-p",
        help="Instead of an entry id: every parked event of this projection (narrowed by "
        "--source and --type).",
        show_default=False,
    ),
]
BulkSource = Annotated[
    str | None,
    typer.Option(
        "--source",
        "-s",
        help="With --projection or --malformed: only this source (a group: its members).",
        show_default=False,
    ),
]
BulkType = Annotated[
    str | None,
    typer.Option("--type", help="With --projection: only events of this type.", show_default=False),
]
YesOption = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Do not ask for confirmation (needed when not interactive)."),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")
]
SHOWN_FAILURES = 20


def refuse_with_id(entry_id: str, **given: Any) -> None:
    """Exit 2 when selection options come with an entry id: one or the other."""
    names = [f"--{name.replace('_', '-')}" for name, value in given.items() if value]
    if names:
        raise fail(
            f"{', '.join(names)}: only without an entry id (they are for many entries); "
            f"got {entry_id}",
            EXIT_CONFIG,
        )


def run_projection_bulk(
    action: str, config: Path | None, selection: Selection, yes: bool, dry_run: bool
) -> None:
    """``action`` (``retry`` or ``skip``) every parked event ``selection`` chooses."""
    require_consent(yes, dry_run)
    outcome: list[Outcome] = []

    def work(runtime: Any) -> None:
        from workers.cli_parked import _known_projection, _removed_notes

        with changing_nothing():
            engine = runtime.engine
            _known_projection(runtime, selection.projection)
            configured = selection.projection in engine.projections
            if action == "retry" and not configured:
                raise fail(no_handler(selection.projection), EXIT_CONFIG)
            if not configured:
                _removed_notes([selection.projection])
            chosen = select(engine, selection, stranded=action == "skip")
            if not chosen:
                out.print(
                    f"nothing parked matches ({described(selection)})",
                    highlight=False,
                    soft_wrap=True,
                )
                return
            _plan(action, chosen, selection, configured, detailed=dry_run)
            if dry_run:
                out.print("dry run: nothing changed", highlight=False, soft_wrap=True)
                return
            confirm(yes, f"{action} them?")
        holds = sum(len(s.holds) + len(s.stranded) for s in chosen)
        so_far = Outcome()
        stopped = partial(_report_stopped, so_far, selection, action)
        with reporting_stops(stopped), _progress() as bar:
            task = bar.add_task(f"{action} parked", total=holds)
            step = partial(bar.advance, task)
            outcome.append((retry if action == "retry" else skip)(engine, chosen, step, so_far))

    def report(_: None) -> None:
        if outcome:
            _report(outcome[0], selection)

    with_runtime(config, work, report=report)


def skip_malformed(config: Path | None, source: str, yes: bool, dry_run: bool) -> None:
    """Skip every parked malformed outbox row of ``source`` (a group: its members)."""
    require_consent(yes, dry_run)

    def work(runtime: Any) -> None:
        from outbox.parking import ParkedEvents
        from outbox.schema import PARKED_OUTBOX_ROW

        rows = ParkedEvents(runtime.log.engine)
        with changing_nothing():
            found = rows.list(source=source, kind=PARKED_OUTBOX_ROW, limit=None)
            if not found:
                out.print(
                    f"nothing parked matches (malformed rows of source {escape(repr(source))})",
                    highlight=False,
                    soft_wrap=True,
                )
                return
            out.print(
                f"would skip {len(found)} malformed outbox row(s) of source {escape(repr(source))}",
                highlight=False,
                soft_wrap=True,
            )
            for entry in found if dry_run else []:
                first = (entry.reason.strip().splitlines() or [""])[0]
                out.print(
                    f"  {entry.id}  {entry.source}  {escape(first)}",
                    highlight=False,
                    soft_wrap=True,
                )
            if dry_run:
                out.print("dry run: nothing changed", highlight=False, soft_wrap=True)
                return
            confirm(yes, "skip them?")
        with reporting_stops(
            lambda _cause: out.print(
                f"interrupted: 0 skipped (malformed rows of source {escape(repr(source))}); not "
                f"done: {len(found)} malformed outbox row(s), still parked: run the same "
                "command again to go on",
                highlight=False,
                soft_wrap=True,
            )
        ):
            skipped = rows.skip_many([entry.id for entry in found])
        out.print(  # before the stores are closed (see with_runtime)
            f"done: 0 applied, 0 still parked, {skipped} skipped "
            f"(malformed rows of source {escape(repr(source))}; listed with --all)",
            highlight=False,
            soft_wrap=True,
        )

    with_runtime(config, work, create_tables=False)


@contextmanager
def reporting_stops(report: Callable[[str], None]) -> Iterator[None]:
    """Run the block; when an error (a store failing partway) or Ctrl-C stops it, first
    ``report(cause)`` what was done and what was not (``cause``: ``"Ctrl-C"`` or ``"the
    error"``, for work cut at its commit), then let the error go on to
    :func:`~workers.cli_support.guarded` (Ctrl-C: exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        report("Ctrl-C")
        raise fail("interrupted (Ctrl-C)", EXIT_INTERRUPTED) from None
    except Exception:
        report("the error")
        raise


def require_consent(yes: bool, dry_run: bool) -> None:
    """Exit 2 before any work when nobody can be asked and ``--yes`` was not given."""
    if not (yes or dry_run or sys.stdin.isatty()):
        raise fail(
            "not an interactive terminal: nobody can confirm; pass --yes to go on "
            "(or --dry-run to see what would be done)",
            EXIT_CONFIG,
        )


def _plan(
    action: str, chosen: list[Selected], selection: Selection, configured: bool, detailed: bool
) -> None:
    """What ``action`` does; ``detailed``, hold by hold: the events it skips or applies."""
    events = sum(len(s.events) for s in chosen)
    holds = sum(len(s.holds) for s in chosen)
    verb = "retry" if action == "retry" else "skip"
    if events:
        out.print(
            f"would {verb} {events} parked event(s) in {holds} aggregate(s) "
            f"({described(selection)}):",
            highlight=False,
            soft_wrap=True,
        )
    stranded = sum(len(s.stranded) for s in chosen)
    if stranded:
        held = sum(len(s.held[hold]) for s in chosen for hold in s.stranded)
        out.print(
            f"would apply {held} event(s) held behind skipped ones in {stranded} aggregate(s) "
            f"(a skip of {described(selection)} stopped before it applied them):",
            highlight=False,
            soft_wrap=True,
        )
    if not detailed:
        return
    for selected in chosen:
        for hold, skipped in selected.stranded.items():
            out.print(
                f"  {escape(_hold_name(hold))}: apply {_refs(selected.held[hold])} in order "
                f"(held behind skipped e{skipped.id})",
                highlight=False,
                soft_wrap=True,
            )
        for hold, events_of_hold in selected.holds.items():
            name = _hold_name(hold)
            held = selected.held[hold]
            if action == "retry":
                line = f"apply {_refs(held)} in order"
            else:
                ids = {e.id for e in events_of_hold}
                rest = [e for e in held if e.id not in ids]
                line = f"skip {_refs(events_of_hold)}"
                if rest and configured:
                    line += f", then apply {_refs(rest)} in order"
                elif rest:
                    line += f"; {_refs(rest)} stay parked (no handler)"
            out.print(f"  {escape(name)}: {line}", highlight=False, soft_wrap=True)


def _hold_name(hold: Hold) -> str:
    source, key = hold
    tenant = f" (tenant {key.tenant})" if key.tenant else ""
    return f"{source} {key.aggregate_type}:{key.aggregate_id}{tenant}"


def _refs(events: list[Any]) -> str:
    return " ".join(f"e{e.id}" for e in events)


def described(selection: Selection) -> str:
    parts = [f"projection {selection.projection!r}"]
    if selection.source is not None:
        parts.append(f"source {selection.source!r}")
    if selection.event_type is not None:
        parts.append(f"type {selection.event_type!r}")
    return escape(", ".join(parts))


def _progress() -> Progress:
    """A bar on stderr while the holds are worked through; none when it is no terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _report(outcome: Outcome, selection: Selection) -> None:
    """The summary; exit 1 when an aggregate stays parked, naming why (the first few)."""
    out.print(f"done: {_counts(outcome, selection)}", highlight=False, soft_wrap=True)
    if outcome.failed:
        _failures(outcome)
        raise typer.Exit(EXIT_FAILURE)


def _report_stopped(outcome: Outcome, selection: Selection, action: str, cause: str) -> None:
    """The summary of a run stopped partway (by ``cause``): what was done, what was left
    parked and how to go on, then why aggregates stay parked (the first few)."""
    line = f"interrupted: {_counts(outcome, selection)}"
    if outcome.pending:
        events = sum(len(events) for events in outcome.pending.values())
        line += (
            f"; not done: {events} parked event(s) in {len(outcome.pending)} aggregate(s), "
            "still parked"
        )
    if outcome.held:
        events = sum(len(events) for events in outcome.held.values())
        line += (
            f"; not applied yet: {events} event(s) held behind the skipped ones in "
            f"{len(outcome.held)} aggregate(s), still parked"
        )
    if outcome.uncertain:
        events = sum(len(events) for events in outcome.uncertain.values())
        line += (
            f"; unknown: {events} parked event(s) in {len(outcome.uncertain)} aggregate(s) "
            f"whose {action} {cause} cut at its commit, "
            f"{'applied' if action == 'retry' else 'done'} or still parked (`readmodel parked "
            "list` tells)"
        )
    if outcome.pending or outcome.held or outcome.uncertain:
        line += ": run the same command again to go on"
    out.print(line, highlight=False, soft_wrap=True)
    _failures(outcome)


def _counts(outcome: Outcome, selection: Selection) -> str:
    return (
        f"{outcome.applied} applied, {outcome.still_parked} still parked, "
        f"{outcome.skipped} skipped ({described(selection)})"
    )


def _failures(outcome: Outcome) -> None:
    for event, why in outcome.failed[:SHOWN_FAILURES]:
        err.print(
            f"e{event.id} ({escape(event.source)} {escape(event.aggregate_type)}:"
            f"{escape(event.aggregate_id)}) failed again and stays parked with its "
            f"aggregate: {escape(why)}",
            highlight=False,
            soft_wrap=True,
        )
    if len(outcome.failed) > SHOWN_FAILURES:
        err.print(
            f"... and {len(outcome.failed) - SHOWN_FAILURES} more aggregate(s)", highlight=False
        )
