"""The ``status`` tables: sources, projections and the broker queue, as people read them."""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


def counted(count: int, noun: str) -> str:
    """``"1 source"``, ``"2 sources"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def failures(report: Any) -> list[tuple[str, str]]:
    """``(subject, error)`` of each source and the broker with an error; a member refused
    by the configuration says how, as ``health`` does: ``conflict:`` for a database another
    source or tenant reads, ``refused:`` for a bad registry row."""
    failures = [
        (s.source, f"{s.refusal}: {s.error}" if s.refusal else s.error)
        for s in report.sources
        if s.error
    ]
    if report.broker.error:
        failures.append(("broker", report.broker.error))
    return failures


def _rule(row: Any) -> str:
    """The rule the log records; beside it this config's setting when its relays are refused."""
    if row.binary_ids_conflict:
        return f"{row.binary_ids} (config: {row.binary_ids_config}, refused)"
    return row.binary_ids or "-"


def _shows_rules(rows: Any) -> bool:
    """The ``binary ids`` column is shown once a source's rule is not the default "text" (or
    a config's relays are refused): until then it would say "text" on every row."""
    return any(r.binary_ids not in (None, "text") or r.binary_ids_conflict for r in rows)


def status_tables(report: Any, *, errors: bool = False) -> Group:
    """The report as tables; ``errors``: with the unreachable sources' and broker's errors
    under them (``status`` prints those to stderr; ``--watch`` has only the screen)."""
    rules = _shows_rules(report.sources)
    columns = [(c, NAME) for c in ("source", "engine")]
    columns += [(c, FIGURE) for c in ("undelivered", "oldest age", "log head", "parked")]
    rows = [
        [
            _source_cell(row),
            row.engine,
            _figure(row.undelivered),
            _age(row.oldest_undelivered_age_seconds),
            _figure(row.log_head),
            _figure(row.parked),
            *([_rule(row)] if rules else []),
        ]
        for row in report.sources
    ]
    parts: list[Any] = [
        _Fitted("sources", [*columns, *([("binary ids", TEXT)] if rules else [])], rows)
    ]
    if report.projections:
        columns = [(c, NAME) for c in ("projection", "source")]
        columns += [(c, FIGURE) for c in ("checkpoint", "head", "lag", "lag age", "parked")]
        rows = []
        for p in report.projections:
            if not p.lanes:  # no member of its sources yet (a registry listing no tenant)
                error = escape((p.last_error or "")[:60])
                rows.append([p.projection, "-", "-", "-", "0", "-", str(p.parked), error])
            for source, (events, seconds) in sorted(p.by_source().items()):
                lanes = [lane for lane in p.lanes if lane.source == source]
                error = p.last_error if source == p.last_error_source else None
                rows.append(
                    [
                        p.projection,
                        f"{source} (removed)" if lanes[0].removed else source,
                        str(min(lane.checkpoint for lane in lanes)),
                        str(max(lane.head for lane in lanes)),
                        str(events),
                        _age(seconds),
                        str(p.parked_by_source.get(source, 0)),
                        escape((error or "")[:60]),
                    ]
                )
        parts.append(_Fitted("projections", [*columns, ("last error", TEXT)], rows))
        overdue = [p for p in report.projections if p.handlers_overdue]
        if overdue:  # a lane held by a handler the bound cannot interrupt: its lag's cause
            columns = [("projection", NAME), ("handlers", FIGURE), ("oldest past bound", FIGURE)]
            rows = [
                [p.projection, str(p.handlers_overdue), _age(p.oldest_overdue_seconds)]
                for p in overdue
            ]
            parts.append(_Fitted("handlers past engine.handler_timeout", columns, rows))
    broker = report.broker
    if broker.broker != "memory":
        queues = Table(title="broker")
        for column in ("broker", "queue", "ready", "in progress", "delayed", "dead"):
            queues.add_column(column, justify="left" if column in {"broker", "queue"} else "right")
        figures = (broker.ready, broker.in_progress, broker.delayed, broker.dead)
        queues.add_row(
            broker.broker, broker.queue, *("?" if v is None else str(v) for v in figures)
        )
        parts.append(queues)
    if errors:
        for subject, error in failures(report):
            parts.append(Text.assemble((f"{subject}: ", "red"), error))
        for store in report.unreachable_stores():
            parts.append(Text(store.error or "", style="red"))
    return Group(*parts)


NAME, FIGURE, TEXT = "name", "figure", "text"
"""Kinds of column: a name (kept whole when the width allows, else folded), a figure
(right-aligned, its width kept), a text (an error: folded into the width left)."""


class _Fitted:
    """A table laid out for the width it is printed at, cutting no cell: a cut name
    ("customer_…") named no projection, and a wide column pushed the last ones (parked, last
    error) off an 80-column screen. Figures keep their width; names get theirs when the
    figures leave room, else a share of it (folded onto more lines); texts fold into the
    rest."""

    def __init__(self, title: str, columns: list[tuple[str, str]], rows: list[list[str]]):
        self.title, self.columns, self.rows = title, columns, rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self._table(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self._table(options.max_width))

    def _table(self, width: int) -> Table:
        table = Table(title=self.title)
        widths = self._name_widths(width)
        for index, (header, kind) in enumerate(self.columns):
            if kind == FIGURE:  # its header may wrap ("lag age"), its figures never
                figures = None if widths is None else self._longest(index, words=False, head=False)
                table.add_column(header, justify="right", overflow="fold", min_width=figures)
            else:
                table.add_column(header, overflow="fold", width=(widths or {}).get(index))
        for row in self.rows:
            table.add_row(*row)
        return table

    def _longest(self, index: int, *, words: bool, head: bool = True) -> int:
        """The longest cell of column ``index`` (its header too, unless not ``head``), or
        with ``words`` its longest word: the narrowest it can be without folding a word."""
        cells = [*([self.columns[index][0]] if head else []), *(row[index] for row in self.rows)]
        return max((len(w) for c in cells for w in (c.split() if words else [c])), default=1)

    def _name_widths(self, width: int) -> dict[int, int] | None:
        """``{column index: width}`` of the name columns, fitted into ``width`` (``None``:
        too narrow for figures to keep their width)."""

        longest = self._longest
        kinds = [kind for _, kind in self.columns]
        names = [i for i, kind in enumerate(kinds) if kind == NAME]
        want = {i: longest(i, words=True) for i in names}
        room = width - (len(kinds) + 1) - 2 * len(kinds)  # borders, padding
        room -= sum(
            max(longest(i, words=False, head=False), longest(i, words=True))
            for i, kind in enumerate(kinds)
            if kind == FIGURE
        )
        room -= sum(min(longest(i, words=True), 8) for i, kind in enumerate(kinds) if kind == TEXT)
        if room < 6 * len(names):
            return None  # too narrow to choose: every column folds as the table can
        widths = {}
        for left, i in enumerate(sorted(names, key=want.__getitem__)):  # short names whole
            widths[i] = min(want[i], room // (len(names) - left))
            room -= widths[i]
        return widths


def _source_cell(row: Any) -> str:
    if row.removed:
        return f"{row.source} (removed)"
    return f"{row.source} ({row.refusal})" if row.refusal else row.source


def _figure(value: int | None) -> str:
    """A count, ``?`` when not known (what holds it could not be read)."""
    return "?" if value is None else str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
