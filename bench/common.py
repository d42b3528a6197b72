"""What the benchmarks share: a reported figure and latency percentiles."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure; ``baseline`` is the naive way measured in the same run."""

    bench: str
    metric: str
    value: float
    unit: str
    baseline: float | None
    target: str
    met: bool | None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def as_json(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "bench": self.bench,
            "metric": self.metric,
            "value": round(self.value, 3),
            "unit": self.unit,
            "baseline": None if self.baseline is None else round(self.baseline, 3),
            "ratio": None if ratio is None else round(ratio, 4),
        }


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float
    p99_ms: float
    samples: int
    missing: int
    offered_rate: float


def latency(committed: list[tuple[str, float]], seen: dict[str, float], warmup: float) -> Latency:
    """p50/p99 of ``seen[key] - commit time`` over the events committed after ``warmup`` s."""
    counted = [(key, at) for key, at in committed if at >= committed[0][1] + warmup]
    delays = [(seen[key] - at) * 1000 for key, at in counted if key in seen]
    missing = len(counted) - len(delays)
    if len(delays) < 2:
        raise RuntimeError(f"saw {len(delays)} of {len(counted)} events")
    cuts = statistics.quantiles(delays, n=100, method="inclusive")
    span = committed[-1][1] - committed[0][1]
    offered = (len(committed) - 1) / span if span > 0 else float("nan")
    return Latency(cuts[49], cuts[98], len(delays), missing, offered)


def number(value: float | None) -> str:
    """A figure for the table: thousands separated, one decimal below 100."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def print_figures(title: str, columns: tuple[str, str], rows: list[Figure]) -> Any:
    """Print the figures as a table (``columns``: what the value and the baseline are);
    returns the rich console, for the notes a bench prints under it."""
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("metric", *columns, "ratio", "unit", "target", ""):
        table.add_column(column, justify="left" if column in ("metric", "target") else "right")
    for row in rows:
        ratio = row.ratio
        table.add_row(
            row.metric,
            number(row.value) if row.unit != "ratio" else f"{row.value:.4f}",
            number(row.baseline),
            "-" if ratio is None else f"{ratio:.3g}x",
            row.unit,
            row.target,
            "" if row.met is None else ("[green]met[/]" if row.met else "[red]missed[/]"),
        )
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    return console
