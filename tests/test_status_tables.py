"""The ``status`` tables on an 80-column screen cut no cell and push no column off it: a
projection shown as "customer_…" named none of customer_orders and customer_stats, and a
long tenant name pushed "parked" and "last error" past the screen's edge. Names fold onto
more lines when they must; figures are never folded."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from outbox.status import SourceStatus
from projections.status import LaneStatus, ProjectionStatus
from workers.cli_ops import status_tables
from workers.queues import QueueDepth
from workers.status_report import Report

TENANT = "pos:acme-corporation-europe"


def _projection(name: str, source: str, error: str | None = None) -> ProjectionStatus:
    lanes = [LaneStatus(source, 0, 1234567, 1234577, 10, 2.0)]
    return ProjectionStatus(name, "default", 10, 2.0, 3, error, None, lanes, {source: 3}, source)


def _report() -> Report:
    names = ["conversation_inbox", "customer_orders", "customer_stats", "user_directory"]
    return Report(
        sources=[
            SourceStatus(TENANT, "postgresql", "postgresql://db/acme", 12345, 3.5, 1234577, 0),
            SourceStatus("orders", "postgresql", "postgresql://db/orders", 0, None, 1234577, 0),
        ],
        projections=[
            *(_projection(name, "orders") for name in names),
            _projection("sales_by_day", TENANT, "KeyError: 'sku' in handler recorded"),
        ],
        broker=QueueDepth("redis", "readmodel", 1, 0, 0),
    )


def _rows(text: str) -> list[list[str]]:
    """The rows of the tables in ``text``, each cell's folded lines joined (without the
    spaces a wrap leaves): a line whose figures are blank continues the row above."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if any(re.fullmatch(r"[\d.]+s?|-", cell) for cell in cells) or not rows:
            rows.append(cells)
        else:
            rows[-1] = [a + b for a, b in zip(rows[-1], cells, strict=True)]
    return [[cell.replace(" ", "") for cell in row] for row in rows]


@pytest.mark.parametrize("width", [80, 100, 160])
def test_every_cell_whole_within_the_width(width: int) -> None:
    console = Console(width=width, record=True)
    console.print(status_tables(_report()))
    text = console.export_text()

    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    rows = _rows(text)
    assert [row[0] for row in rows[:2]] == [TENANT, "orders"], text
    assert rows[0][1:] == ["postgresql", "12345", "3.5s", "1234577", "0"], text
    projections = [row for row in rows if len(row) == 8]
    assert [row[:2] for row in projections] == [
        ["conversation_inbox", "orders"],
        ["customer_orders", "orders"],
        ["customer_stats", "orders"],
        ["user_directory", "orders"],
        ["sales_by_day", TENANT],
    ], text
    for row in projections:  # the figures, parked and last error on the screen, whole
        assert row[2:7] == ["1234567", "1234577", "10", "2.0s", "3"], text
    assert projections[-1][7] == "KeyError:'sku'inhandlerrecorded", text


def test_names_stay_on_one_line_when_the_width_allows() -> None:
    console = Console(width=160, record=True)
    console.print(status_tables(_report()))
    text = console.export_text()

    for name in ["conversation_inbox", "customer_orders", "customer_stats", TENANT]:
        assert re.search(rf"│ {name}\s*│", text), text
