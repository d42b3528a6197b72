"""``readmodel parked``: malformed outbox rows and projection events that kept failing."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from outbox.errors import ReadmodelError
from projections.engine_parked import no_handler
from projections.parked_bulk import Selection
from projections.store import HandlerFailed
from workers.cli_parked_bulk import (
    BulkProjection,
    BulkSource,
    BulkType,
    DryRunOption,
    YesOption,
    refuse_with_id,
    run_projection_bulk,
    skip_malformed,
)
from workers.cli_parked_purge import register as register_purge
from workers.cli_support import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    ConfigOption,
    JsonOption,
    err,
    fail,
    out,
    with_runtime,
)

EXIT_CODES = (
    "Exit codes: 0 done, 1 failed (no such entry; an entry retried or skipped that is not "
    "parked (any more); a retried event failed again; a bulk "
    "retry or skip left an aggregate parked; a bulk command was declined), 2 bad "
    "usage (an unknown projection, a bad entry id, a retry of a projection no longer "
    "configured, a bulk retry, skip or purge without --yes when not interactive), an invalid "
    "configuration or a read store "
    "not at the schema revision this readmodel needs (run 'readmodel migrate'), 3 read store "
    "unreachable (a bulk command: also when it became so partway), 130 a bulk command "
    "interrupted (Ctrl-C)."
)
parked_app = typer.Typer(
    help="Parked outbox rows and projection events: list, show, retry, skip, purge."
    f"\n\n{EXIT_CODES}",
    no_args_is_help=True,
)


OptionalEntryId = Annotated[
    str | None,
    typer.Argument(
        help="An id from 'readmodel parked list' (as for 'show'); leave it out to choose many "
        "with --projection (skip: or --malformed).",
        show_default=False,
    ),
]
EntryId = Annotated[
    str,
    typer.Argument(
        help="An id from 'readmodel parked list': a number for an outbox row, "
        "e<number> for a projection event (e<number>@<projection> when stores share numbers)."
    ),
]


@parked_app.command("list", epilog=EXIT_CODES)
def parked_list(
    config: ConfigOption = None,
    source: Annotated[
        str | None, typer.Option("--source", "-s", help="Only this source (a group: its members).")
    ] = None,
    projection: Annotated[
        str | None,
        typer.Option(
            "--projection",
            help="Only this projection's events; also one no longer configured whose events "
            "or checkpoints the store keeps.",
        ),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Include retried and skipped entries.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many entries.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List parked outbox rows (malformed) and projection events (handler kept failing)."""
    status = None if show_all else "parked"
    removed: set[str] = set()

    def collect(runtime: Any) -> list[dict[str, Any]]:
        from outbox.parking import ParkedEvents
        from outbox.source_groups import group_of

        if projection is not None:
            _known_projection(runtime, projection)
        rows: list[dict[str, Any]] = []
        if projection is None:
            for e in ParkedEvents(runtime.log.engine).list(
                source=source, status=status, limit=limit
            ):
                rows.append({**e.as_dict(), "ref": str(e.id)})
        events = [
            event
            for event in runtime.engine.parked(projection, status)
            if source is None or source in (event.source, group_of(event.source))
        ]
        configured = runtime.engine.projections
        removed.update(e.projection for e in events if e.projection not in configured)
        if projection is not None and projection not in configured:
            removed.add(projection)
        numbers = Counter(event.id for event in events)
        for event, data in zip(events, _with_event_tenants(runtime, events), strict=True):
            shared = numbers[event.id] > 1  # numbered by another store too
            ref = f"e{event.id}" + (f"@{event.projection}" if shared else "")
            rows.append({**data, "kind": "projection_event", "ref": ref})
        return rows[:limit]

    def report(entries: list[dict[str, Any]]) -> None:
        _removed_notes(sorted(removed))
        if as_json:
            print(json.dumps(entries, indent=2, default=str))
        else:
            out.print(_table(entries))

    with_runtime(config, collect, create_tables=False, report=report)


def _removed_notes(names: list[str]) -> None:
    for name in names:
        err.print(
            f"note: projection {escape(repr(name))} is no longer configured: its parked events "
            "can be listed, shown and skipped, not retried",
            highlight=False,
            soft_wrap=True,
        )


def _table(entries: list[dict[str, Any]]) -> Table:
    """The entries as a table that stays readable when narrow: long cells wrap, and a word
    too long for its column (an event id) folds onto the next line instead of being cut."""
    table = Table(title="parked")
    tenants = any(e.get("tenant") or e.get("event_tenant") for e in entries)
    columns = ("id", "kind", "source", *(("tenant",) if tenants else ()), "projection")
    for column in (*columns, "event id", "reason", "status"):
        table.add_column(column, overflow="fold", min_width=len(column))
    for e in entries:
        table.add_row(
            e["ref"],
            e["kind"],
            e["source"],
            *((escape(_tenant_cell(e)),) if tenants else ()),
            e.get("projection") or "-",
            escape(e.get("event_id") or "-"),
            escape(_first_line(e["reason"], 100)),
            e["status"],
        )
    return table


def _tenant_cell(entry: dict[str, Any]) -> str:
    """The event's own tenant; beside it the tenant of the hold it is parked under when that
    differs (a hold naming no tenant holds the aggregate id in every tenant)."""
    own = entry.get("event_tenant", entry.get("tenant")) or "-"
    hold = entry.get("tenant")
    if entry.get("kind") != "projection_event" or (hold or None) == entry.get("event_tenant"):
        return own
    return f"{own} (hold: {hold or 'every tenant'})"


def _with_event_tenants(runtime: Any, events: list[Any]) -> list[dict[str, Any]]:
    """``events`` as dicts with ``event_tenant``: the event's own tenant, read from the log.
    ``tenant`` is the tenant of the hold it is parked under, which names none once tenants'
    holds of its aggregate id were merged (:func:`projections.store.merge_holds`)."""
    positions: dict[str, list[int]] = {}
    for event in events:
        positions.setdefault(event.source, []).append(event.position)
    tenants = {
        (source, position): tenant
        for source, wanted in positions.items()
        for position, tenant in runtime.log.tenants_at(source, wanted).items()
    }
    return [
        {**event.as_dict(), "event_tenant": tenants.get((event.source, event.position))}
        for event in events
    ]


def _first_line(text: str, width: int) -> str:
    """The start of ``text`` for a table cell (``parked show`` has it whole)."""
    whole = text.strip()
    line = whole.splitlines()[0] if whole else ""
    if len(line) > width:
        return line[: width - 1] + "…"
    return line if line == whole else f"{line} …"


@parked_app.command("show", epilog=EXIT_CODES)
def parked_show(entry_id: EntryId, config: ConfigOption = None) -> None:
    """Show one parked entry in full: reason, traceback or raw row, attempts."""
    configured: set[str] = set()

    def find(runtime: Any) -> dict[str, Any]:
        configured.update(runtime.engine.projections)
        return _find_entry(runtime, entry_id)

    def report(entry: dict[str, Any]) -> None:
        if entry.get("kind") == "projection_event" and entry["projection"] not in configured:
            _removed_notes([entry["projection"]])
        print(json.dumps(entry, indent=2, default=str))

    with_runtime(config, find, create_tables=False, report=report)


@parked_app.command("retry", epilog=EXIT_CODES)
def parked_retry(
    entry_id: OptionalEntryId = None,
    config: ConfigOption = None,
    projection: BulkProjection = None,
    source: BulkSource = None,
    event_type: BulkType = None,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
) -> None:
    """Apply a parked projection event again, with every later parked event of its aggregate,
    in order; on success the aggregate flows normally again.

    With --projection instead of an id: every aggregate with a chosen event, one after the
    other; an aggregate failing again stays parked, the others go on."""
    if entry_id is None:
        selection = _selection(projection, source, event_type, "retry")
        return run_projection_bulk("retry", config, selection, yes, dry_run)
    refuse_with_id(entry_id, projection=projection, source=source, type=event_type)
    refuse_with_id(entry_id, dry_run=dry_run)

    def retry(runtime: Any) -> int:
        kind, number = _parse_entry(entry_id)
        if kind != "e":
            raise ReadmodelError(
                f"{entry_id} is a malformed outbox row: it cannot be applied; "
                "fix the row in the service and write it again, or skip it"
            )
        event = _projection_entry(runtime, number, entry_id)
        if event.projection not in runtime.engine.projections:
            raise fail(f"{entry_id}: {no_handler(event.projection)}", EXIT_CONFIG)
        try:
            return runtime.engine.retry(event)
        except HandlerFailed as failed:
            raise fail(
                f"{entry_id} failed again and stays parked: {failed}", EXIT_FAILURE
            ) from None

    def report(count: int) -> None:
        out.print(f"{entry_id}: applied {count} parked event(s); the aggregate flows again")

    with_runtime(config, retry, report=report)


@parked_app.command("skip", epilog=EXIT_CODES)
def parked_skip(
    entry_id: OptionalEntryId = None,
    config: ConfigOption = None,
    projection: BulkProjection = None,
    source: BulkSource = None,
    event_type: BulkType = None,
    malformed: Annotated[
        bool,
        typer.Option(
            "--malformed",
            help="Instead of an entry id: every parked malformed outbox row of --source.",
        ),
    ] = False,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
) -> None:
    """Mark a parked entry skipped (it stays listed with --all). For a projection event, the
    events of its aggregate that were held behind it are then applied in order.

    With --projection instead of an id: every chosen event, then the events held behind
    them, aggregate by aggregate; with --malformed --source: that source's malformed rows."""
    if entry_id is None and malformed:
        if projection is not None or event_type is not None or source is None:
            raise fail("--malformed takes --source (and no --projection or --type)", EXIT_CONFIG)
        return skip_malformed(config, source, yes, dry_run)
    if entry_id is None:
        selection = _selection(projection, source, event_type, "skip")
        return run_projection_bulk("skip", config, selection, yes, dry_run)
    refuse_with_id(entry_id, projection=projection, source=source, type=event_type)
    refuse_with_id(entry_id, malformed=malformed, dry_run=dry_run)

    held: list[str] = []  # a projection no longer configured: events held behind the skipped

    def skip(runtime: Any) -> int:
        from outbox.parking import ParkedEvents

        kind, number = _parse_entry(entry_id)
        if kind == "e":
            event = _projection_entry(runtime, number, entry_id)
            try:
                applied: int = runtime.engine.skip(event)
            except HandlerFailed as failed:
                raise fail(
                    f"{entry_id} skipped, but a later event of its aggregate failed again and "
                    f"stays parked: {failed}",
                    EXIT_FAILURE,
                ) from None
            if event.projection not in runtime.engine.projections:
                held.extend(
                    f"e{e.id}"
                    for e in runtime.engine.parked(event.projection)
                    if (e.source, e.aggregate) == (event.source, event.aggregate)
                )
                _removed_notes([event.projection])
            return applied
        if not ParkedEvents(runtime.log.engine).skip(number):
            raise ReadmodelError(f"no parked entry {entry_id}")
        return 0

    def report(applied: int) -> None:
        suffix = f"; applied {applied} held event(s) of its aggregate" if applied else ""
        if held:
            suffix = f"; the events of its aggregate held behind it stay parked: {', '.join(held)}"
        out.print(f"{entry_id}: skipped{suffix}", highlight=False, soft_wrap=True)

    with_runtime(config, skip, report=report)


register_purge(parked_app, EXIT_CODES)


def _selection(
    projection: str | None, source: str | None, event_type: str | None, action: str
) -> Selection:
    if projection is None:
        hint = " (or --malformed --source S)" if action == "skip" else ""
        raise fail(f"give an entry id, or --projection P to {action} many{hint}", EXIT_CONFIG)
    return Selection(projection, source, event_type)


def _parse_entry(entry_id: str) -> tuple[str, int]:
    text = entry_id.strip().lower().split("@", 1)[0]
    kind = "e" if text.startswith("e") else "o"
    try:
        return kind, int(text.lstrip("eo"))
    except ValueError:
        raise fail(f"{entry_id!r} is not a parked entry id (e.g. 12 or e12)", EXIT_CONFIG) from None


def _projection_entry(runtime: Any, number: int, entry_id: str = "") -> Any:
    """The projection event ``e<number>``; each store numbers its own, so when stores share
    a number the id must name the projection (``e<number>@<projection>``)."""
    projection = entry_id.split("@", 1)[1].strip() if "@" in entry_id else None
    if projection is not None:
        _known_projection(runtime, projection)
    found = [
        event
        for event in runtime.engine.parked(projection, None)
        if event.id == number and (projection is None or event.projection == projection)
    ]
    if not found:
        raise ReadmodelError(f"no parked projection event {entry_id or f'e{number}'}")
    if len({event.projection for event in found}) > 1:
        refs = ", ".join(sorted(f"e{number}@{event.projection}" for event in found))
        raise ReadmodelError(f"e{number} names events in several stores: give one of {refs}")
    return found[0]


def _known_projection(runtime: Any, name: str) -> None:
    """Exit 2 unless ``name`` is a configured projection, or one removed from the
    configuration whose parked events or checkpoints a store keeps: a mistyped name listed
    nothing, as if nothing were parked."""
    engine = runtime.engine
    if name in engine.projections or engine.removed(name):
        return
    known = sorted(engine.projections)
    known += [f"{n} (no longer configured)" for n in engine.removed_with_parked()]
    raise fail(f"unknown projection {name!r} (known: {', '.join(known) or 'none'})", EXIT_CONFIG)


def _find_entry(runtime: Any, entry_id: str) -> dict[str, Any]:
    from outbox.parking import ParkedEvents

    kind, number = _parse_entry(entry_id)
    if kind == "e":
        entry = _projection_entry(runtime, number, entry_id)
        return {**_with_event_tenants(runtime, [entry])[0], "kind": "projection_event"}
    entry = ParkedEvents(runtime.log.engine).get(number)
    if entry is None:
        raise ReadmodelError(f"no parked entry with id {entry_id}")
    return entry.as_dict()
