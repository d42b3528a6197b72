"""The outbox table's columns, written once for every engine's ``outbox init`` DDL."""

from __future__ import annotations

from dataclasses import dataclass

from config import SourceSettings


@dataclass(frozen=True, slots=True)
class OutboxTypes:
    """One engine's column definitions (type, constraints, default) and identifier quote."""

    quote: str
    position: str
    event_id: str
    text: str
    payload: str
    occurred_at: str
    optional_text: str
    headers: str
    dispatched_at: str

    def q(self, identifier: str) -> str:
        return self.quote + identifier.replace(self.quote, self.quote * 2) + self.quote

    def table(self, settings: SourceSettings) -> str:
        table = self.q(settings.table)
        return f"{self.q(settings.schema_name)}.{table}" if settings.schema_name else table


def outbox_columns(settings: SourceSettings, types: OutboxTypes) -> list[str]:
    """Column definitions for the configured column names (optional ones only when mapped)."""
    c, q = settings.columns, types.q
    columns = [f"{q(c.position)} {types.position}"]
    if c.event_id:
        columns.append(f"{q(c.event_id)} {types.event_id}")
    columns += [
        f"{q(c.aggregate_type)} {types.text}",
        f"{q(c.aggregate_id)} {types.text}",
        f"{q(c.event_type)} {types.text}",
        f"{q(c.payload)} {types.payload}",
    ]
    optional = (
        (c.occurred_at, types.occurred_at),
        (c.tenant, types.optional_text),
        (c.headers, types.headers),
        (c.dispatched_at, types.dispatched_at),
    )
    columns += [f"{q(name)} {definition}" for name, definition in optional if name]
    return columns


def create_table(
    settings: SourceSettings, types: OutboxTypes, extra: list[str], suffix: str
) -> str:
    body = ",\n    ".join(outbox_columns(settings, types) + extra)
    return f"CREATE TABLE IF NOT EXISTS {types.table(settings)} (\n    {body}\n){suffix}"
