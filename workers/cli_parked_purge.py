"""``readmodel parked purge``: delete entries already skipped, never one still parked (or
retried, or settled by a replay), after asking (or ``--yes``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from outbox.parking import PurgeProgress
from projections.parked_bulk import Selection
from workers.cli_confirm import changing_nothing, confirm
from workers.cli_parked_bulk import (
    BulkSource,
    BulkType,
    DryRunOption,
    YesOption,
    described,
    reporting_stops,
    require_consent,
)
from workers.cli_support import EXIT_CONFIG, ConfigOption, fail, out, with_runtime

PurgeProjection = Annotated[
    str | None,
    typer.Option(
        "--projection",
        "-p",
        help="The skipped events of this projection (narrowed by --source and --type).",
        show_default=False,
    ),
]


def parked_purge(
    config: ConfigOption = None,
    projection: PurgeProjection = None,
    source: BulkSource = None,
    event_type: BulkType = None,
    malformed: Annotated[
        bool,
        typer.Option("--malformed", help="The skipped malformed outbox rows of --source."),
    ] = False,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
) -> None:
    """Delete parked entries already skipped (no longer listed, even with --all); an entry
    still parked, retried or settled by a replay is never deleted."""
    if malformed == (projection is not None) or (malformed and event_type is not None):
        raise fail("give --projection P, or --malformed --source S (without --type)", EXIT_CONFIG)
    if malformed and source is None:
        raise fail("--malformed takes --source", EXIT_CONFIG)
    require_consent(yes, dry_run)
    what = (
        f"malformed rows of source {escape(repr(source))}"
        if malformed
        else described(Selection(projection or "", source, event_type))
    )

    def work(runtime: Any) -> None:
        with changing_nothing():
            chosen = (
                _skipped_rows(runtime, source or "")
                if malformed
                else _skipped_events(runtime, Selection(projection or "", source, event_type))
            )
            count = sum(len(ids) for _, ids in chosen)
            if not count:
                out.print(f"nothing skipped matches ({what})", highlight=False, soft_wrap=True)
                return
            out.print(
                f"would delete {_entries(count)} ({what})",
                highlight=False,
                soft_wrap=True,
            )
            if dry_run:
                out.print("dry run: nothing changed", highlight=False, soft_wrap=True)
                return
            confirm(yes, "delete them?")
        progress = PurgeProgress()

        def report(cause: str) -> None:
            kept = count - progress.handled - progress.uncertain
            line = (
                f"interrupted: {_entries(progress.deleted)} deleted ({what}); not done: "
                f"{_entries(kept)}, kept"
            )
            if progress.uncertain:
                line += (
                    f"; unknown: {_entries(progress.uncertain)} whose delete {cause} cut at its "
                    "commit, deleted or kept (`readmodel parked list --all` tells)"
                )
            out.print(
                f"{line}: run the same command again to go on", highlight=False, soft_wrap=True
            )

        with reporting_stops(report):
            for purge, ids in chosen:
                purge(ids, progress)
        out.print(  # before the stores are closed (see with_runtime)
            f"done: {_entries(progress.deleted)} deleted ({what})",
            highlight=False,
            soft_wrap=True,
        )

    with_runtime(config, work, create_tables=False)


def _entries(count: int) -> str:
    return f"{count} skipped entr{'y' if count == 1 else 'ies'}"


def _skipped_events(runtime: Any, selection: Selection) -> list[tuple[Any, list[int]]]:
    """Per store keeping some: its purge, and the ids of its skipped events chosen."""
    from projections.store_names import naming
    from workers.cli_parked import _known_projection

    _known_projection(runtime, selection.projection)
    chosen = []
    for store in runtime.engine.parking_stores():
        with naming(store):
            skipped = store.parked(selection.projection, "skipped")
        ids = [e.id for e in skipped if selection.matches(e)]
        if ids:
            chosen.append((store.purge_skipped, ids))
    return chosen


def _skipped_rows(runtime: Any, source: str) -> list[tuple[Any, list[int]]]:
    from outbox.parking import ParkedEvents
    from outbox.schema import PARKED_OUTBOX_ROW

    rows = ParkedEvents(runtime.log.engine)
    found = rows.list(source=source, kind=PARKED_OUTBOX_ROW, status="skipped", limit=None)
    return [(rows.purge_skipped, [entry.id for entry in found])] if found else []


def register(app: typer.Typer, epilog: str) -> None:
    """Add ``purge`` to the ``readmodel parked`` commands."""
    app.command("purge", epilog=epilog)(parked_purge)
