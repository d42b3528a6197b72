"""``readmodel replay``: rebuild a projection from the event log (see ``projections/replay.py``,
and ``projections/document_replay.py`` for a projection kept in a MongoDB store)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from outbox.errors import ReadmodelError
from projections.document_replay import RETIRE_AFTER, DocumentReplayer
from projections.replay import (
    BLUE_GREEN,
    Replayer,
    ReplayHooks,
    ReplayLocked,
    ReplayOptions,
    ReplayPlan,
    ReplayRefused,
    ReplaySummary,
)
from projections.replay_rebuild import is_transient
from projections.shadow_leftovers import drop_unmarked_hint
from projections.store_names import naming, store_where
from projections.stores import is_mongodb
from workers.cli_confirm import changing_nothing, confirm
from workers.cli_support import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    ConfigOption,
    close_runtime,
    err,
    fail,
    guarded,
    interrupted_saying,
    open_runtime,
    out,
)
from workers.status_tables import counted


def replay_command(
    projection: Annotated[str, typer.Argument(help="The projection to rebuild (its name).")],
    source: Annotated[
        str | None,
        typer.Option("--source", "-s", help="In place only: replay just this source's lanes."),
    ] = None,
    from_position: Annotated[
        int | None,
        typer.Option(
            "--from-position",
            min=0,
            help="Replay the events after this log position IN PLACE into the live tables "
            "(replay-safe projections only; 0 for the whole log). Without it: blue/green rebuild.",
        ),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="In place only: replay just this tenant's events."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be replayed; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    skip_errors: Annotated[
        bool,
        typer.Option(
            "--skip-errors",
            help="Skip (and park) events whose handler fails, with the later events of their "
            "aggregate, instead of stopping.",
        ),
    ] = False,
    apply_skipped: Annotated[
        bool,
        typer.Option(
            "--apply-skipped",
            help="Rebuild only: apply again the events an operator skipped ('readmodel "
            "parked skip'), which a replay otherwise leaves out as the live model did; "
            "those applied are marked replayed (with --skip-errors, one still failing "
            "stays skipped).",
        ),
    ] = False,
    cleanup: Annotated[
        bool,
        typer.Option(
            "--cleanup",
            help="Only drop what an interrupted replay left behind (its shadow), or old "
            "tables a swap could not drop (with --dry-run: list them, drop nothing).",
        ),
    ] = False,
    drop_unmarked: Annotated[
        list[str] | None,
        typer.Option(
            "--drop-unmarked",
            metavar="TABLE",
            show_default=False,
            help="With --cleanup: drop also this table, named like the projection's shadow "
            "or old table but without readmodel's mark (a replay of a readmodel older than "
            "the mark left it), or this collection (MongoDB store), named like a generation "
            "of the projection's that rm_generations does not record. Only such a table or "
            "collection is dropped, and only when named; repeat for several.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            show_default=False,
            help="Events per replay transaction. By default 100,000 for a blue/green rebuild "
            "on PostgreSQL (its shadow tables hold nobody up; the log is read 50,000 at a "
            "time) and 20,000 on SQLite, in place, in the swap's last catch-up and for "
            "documents (live lanes wait for each).",
        ),
    ] = None,
    retire_after: Annotated[
        float,
        typer.Option(
            "--retire-after",
            min=0,
            help="Documents (MongoDB store): seconds the old collections are kept after the "
            "swap before they are dropped (live batches that read them just before it may "
            "still be finishing).",
        ),
    ] = RETIRE_AFTER,
    config: ConfigOption = None,
) -> None:
    """Rebuild PROJECTION from the event log without downtime.

    By default blue/green: the tables (or a MongoDB store's collections) are rebuilt as
    shadow copies while the live model keeps serving and applying new events, then
    swapped in one transaction. An error in a
    handler stops the replay (live model untouched) unless --skip-errors. Events an
    operator skipped ('readmodel parked skip') are left out, as the live model left them,
    unless --apply-skipped. Ctrl-C is safe: the live model stays as it was; the next
    replay (or --cleanup) removes the shadow.

    Exit codes: 0 done, 1 failed or refused at run time (another replay running, a handler
    error), 2 bad usage (or no --yes without a terminal), 3 database unreachable,
    130 interrupted.
    """
    runtime = open_runtime(config, create_tables=not dry_run)
    try:
        try:
            target = runtime.engine.projection(projection)
        except ReadmodelError as exc:
            raise fail(str(exc), EXIT_CONFIG) from None
        options = ReplayOptions(from_position, source, tenant, skip_errors, apply_skipped)
        hooks = _ProgressHooks()
        store = runtime.engine.store_of(target)
        documents = is_mongodb(getattr(store, "url", ""))
        replayer = _call(
            DocumentReplayer if documents else Replayer,
            runtime.engine.reader,
            target,
            store,
            cache=getattr(runtime, "cache", None),
            hooks=hooks,
            **({"batch_size": batch_size} if batch_size else {}),
            **({"retire_after": retire_after} if documents else {}),
        )
        if drop_unmarked and (not cleanup or dry_run):
            raise fail("--drop-unmarked goes with --cleanup (not --dry-run)", EXIT_CONFIG)
        if cleanup and dry_run:
            with changing_nothing():
                left = _call(naming(store)(replayer.plan), ReplayOptions()).leftovers
            out.print(
                f"{projection}: --cleanup would drop {', '.join(left)}"
                if left
                else f"{projection}: nothing to clean up",
                highlight=False,
            )
            out.print("dry run: nothing was changed", highlight=False)
            return
        if cleanup:
            with interrupted_saying(_cleanup_interrupted(projection)):
                dropped = _call(
                    naming(store)(replayer.cleanup), *([drop_unmarked] if drop_unmarked else [])
                )
            out.print(
                f"{projection}: dropped {', '.join(dropped)}"
                if dropped
                else f"{projection}: nothing to clean up",
                highlight=False,
            )
            unit, unmarked = ("collection", "record") if documents else ("table", "mark")
            for name in getattr(replayer, "left_alone", []):
                out.print(
                    f"  left {name}: named like a replay leftover but readmodel did not "
                    f"{unmarked} it (a {unit} of yours, or one an older readmodel left); "
                    f"if it is a leftover: {drop_unmarked_hint(projection, name)}",
                    highlight=False,
                    soft_wrap=True,
                )
            for name in getattr(replayer, "kept", []):
                out.print(
                    f"  kept {name}: retired less than --retire-after ago (the longer of "
                    f"{retire_after:g}s and the one its replay ran with)",
                    highlight=False,
                )
            return
        with changing_nothing():
            plan = _call(naming(store)(replayer.plan), options)
            _print_plan(plan, store_where(store))
            if dry_run:
                out.print("dry run: nothing was changed", highlight=False)
                return
            _confirm(plan, yes)
        try:
            with hooks:
                summary = _call(naming(store)(replayer.run), options)
        except KeyboardInterrupt:
            err.print(_interrupted(projection, plan, replayer), highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        _print_summary(summary, apply_skipped=apply_skipped)
    finally:
        close_runtime(runtime)


def _call(func: Any, *args: Any, **kwargs: Any) -> Any:
    """:func:`guarded`, with a refused replay as a usage error, and a running one or a swap
    that gave up waiting for a lock as a failure (not an unreachable database)."""

    def call() -> Any:
        try:
            return func(*args, **kwargs)
        except ReplayRefused as exc:
            raise fail(str(exc), EXIT_CONFIG) from None
        except ReplayLocked as exc:
            raise fail(str(exc), EXIT_FAILURE) from None
        except ReadmodelError as exc:
            if _contended(exc):
                raise fail(str(exc), EXIT_FAILURE) from None
            raise

    return guarded(call)


def _contended(exc: BaseException) -> bool:
    """Whether ``exc`` was caused, at any depth, by a lock timeout, a deadlock or a busy
    SQLite database: the database answered, another transaction held what it needed."""
    cause = exc.__cause__
    for _ in range(8):
        if cause is None:
            return False
        if is_transient(cause):
            return True
        cause = cause.__cause__
    return False


def _cleanup_interrupted(projection: str) -> str:
    """What a Ctrl-C during ``--cleanup`` left: the live model as it was; the leftovers
    dropped so far gone (SQL tables in one transaction, MongoDB collections one by one),
    the others still there."""
    return (
        f"interrupted (Ctrl-C) during the cleanup of {projection!r}: the live model is "
        f"untouched; a leftover already dropped stays dropped, the others are left: "
        f"'readmodel replay {projection} --cleanup' drops them (with --dry-run: lists them)"
    )


def _interrupted(projection: str, plan: ReplayPlan, replayer: Any) -> str:
    """What a Ctrl-C left: nothing of a rebuild before its swap; after it, the rebuilt model
    (its old tables or generation for the next replay or --cleanup); in place, the batches
    committed so far."""
    cleanup = f"the next replay (or 'readmodel replay {projection} --cleanup')"
    if plan.mode != BLUE_GREEN:
        return (
            f"interrupted: the batches of {projection!r} replayed in place so far stay "
            f"applied, checkpoints unmoved; replay again to go through the rest"
        )
    if getattr(replayer, "swapped", False):
        return (
            f"interrupted after the swap: the rebuilt model of {projection!r} is live; "
            f"{cleanup} drops the old {plan.unit}s left"
        )
    return (
        f"interrupted: the live model of {projection!r} is untouched; {cleanup} removes the shadow"
    )


def _confirm(plan: ReplayPlan, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise fail("refusing to replay without confirmation: pass --yes", EXIT_CONFIG)
    what = "rebuild" if plan.mode == BLUE_GREEN else "replay in place"
    confirm(
        False,
        f"{what} {plan.projection} from {plan.events:,} events?",
        declined="replay cancelled: nothing changed",
    )


def _print_plan(plan: ReplayPlan, where: str | None = None) -> None:
    """``where``: the store of the projection (:func:`store_where`), when it is one of several."""
    mode = (
        f"blue/green rebuild into shadow {plan.unit}s"
        if plan.mode == BLUE_GREEN
        else f"in place into the live {plan.unit}s"
    )
    if where is not None:
        mode += f" in the {where}"
    tenant = f", tenant {plan.tenant}" if plan.tenant else ""
    out.print(f"{plan.projection}: {mode}{tenant}", highlight=False, soft_wrap=where is not None)
    table = Table(title="events to replay")
    for column in ("source", "after", "log head", "events"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for s in plan.sources:
        table.add_row(s.source, str(s.after), str(s.head), f"{s.events:,}")
    out.print(table)
    for live, written in plan.tables:
        out.print(
            f"  {plan.unit} {live}" + (f" <- {written}" if written != live else ""),
            highlight=False,
        )
    for name in plan.leftovers:
        out.print(f"  left over by an earlier replay, will be dropped: {name}", highlight=False)
    for line in plan.carried:
        out.print(f"  the swap carries: {line}", highlight=False, soft_wrap=True)
    if plan.skipped_by_operator:
        again = " (--apply-skipped applies them)" if plan.mode == BLUE_GREEN else ""
        out.print(
            f"  {counted(plan.skipped_by_operator, 'event')} skipped by operator (parked skip) "
            f"will be left out{again}",
            highlight=False,
        )
    for warning in plan.warnings:
        out.print(f"  warning: {warning}", highlight=False)


def _print_summary(summary: ReplaySummary, *, apply_skipped: bool = False) -> None:
    done = "rebuilt and swapped in" if summary.mode == BLUE_GREEN else "replayed in place"
    out.print(
        f"{summary.projection}: {done}: {summary.events:,} events in {summary.seconds:.1f}s "
        f"({summary.rate:,.0f} events/s)",
        highlight=False,
    )
    for source, count in summary.applied.items():
        checkpoint = summary.checkpoints.get(source)
        at = f", checkpoint {checkpoint}" if checkpoint is not None else ""
        out.print(f"  {source}: {count:,} events{at}", highlight=False)
    if summary.left_behind:
        out.print(
            f"  old tables left: {', '.join(summary.left_behind)}: {summary.left_because}; "
            f"the next replay or 'readmodel replay {summary.projection} --cleanup' drops them",
            highlight=False,
            soft_wrap=True,
        )
    if summary.released_parked:
        out.print(
            f"  {summary.released_parked} parked events were replayed and released",
            highlight=False,
        )
    if summary.skipped_by_operator and apply_skipped:
        failed = summary.skipped_by_operator_failed
        if failed:
            out.print(
                f"  {counted(failed, 'event')} skipped by operator (parked skip) "
                "still failed: left out, still skipped, their aggregates not held",
                highlight=False,
            )
        if summary.skipped_by_operator > failed:  # held behind a failure, skipped meanwhile
            out.print(
                f"  {counted(summary.skipped_by_operator - failed, 'event')} skipped by "
                "operator (parked skip) while the rebuild ran: left out, still skipped",
                highlight=False,
            )
    elif summary.skipped_by_operator:
        again = " (--apply-skipped applies them)" if summary.mode == BLUE_GREEN else ""
        out.print(
            f"  {counted(summary.skipped_by_operator, 'event')} skipped by operator (parked skip): "
            f"left out, as the live model did{again}",
            highlight=False,
        )
    if summary.skipped:
        parked = (
            "now parked"
            if summary.mode == BLUE_GREEN
            else "not parked: each stays as the live lanes applied it"
        )
        out.print(f"  skipped {len(summary.skipped)} events ({parked}):", highlight=False)
        for event in summary.skipped:
            tenant = f" (tenant {escape(event.event_tenant)})" if event.event_tenant else ""
            out.print(
                f"    {event.source}:{event.position} {event.event_type} {event.aggregate}"
                f"{tenant}: {escape(event.error)}",
                highlight=False,
                soft_wrap=True,
            )


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- events/s" if speed is None else f"{speed:,.0f} events/s")


class _ProgressHooks(ReplayHooks):
    """A rich progress bar on stderr: events applied of those to replay, events/s, ETA."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._task: Any = None

    def __enter__(self) -> _ProgressHooks:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def started(self, plan: ReplayPlan) -> None:
        self._task = self._progress.add_task(plan.projection, total=max(plan.events, 1))

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=applied, total=max(total, 1))

    def before_swap(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, description="swapping")
