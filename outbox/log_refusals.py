"""A batch the event log refused for its data: appended row by row, so that the rows it
refuses are parked with the log's reason and the others are appended (a row is never
dropped, nor does one block the rest)."""

from __future__ import annotations

from outbox.log import AppendResult, EventLog, LogRejectedError
from outbox.rows import LogRecord, MalformedRow


def append_one_by_one(
    log: EventLog,
    source: str,
    records: list[LogRecord],
    malformed: list[MalformedRow],
    rule: str | None,
) -> AppendResult:
    """Find the rows the log refuses, park them with the log's reason, append the rest
    (``rule``: the source's ``binary_ids``, as :meth:`EventLog.append` takes it)."""
    appended = duplicates = 0
    parked = list(malformed)
    touched: set[tuple[str, int]] = set()
    head = log.head(source)
    for record in records:
        try:
            result = log.append(source, [record], binary_ids=rule)
        except LogRejectedError as exc:
            parked.append(
                MalformedRow(
                    source_position=record.source_position,
                    event_id=record.event_id,
                    reason=f"the event log refused the row: {exc}",
                    raw=_record_as_raw(record),
                    aggregate_type=record.aggregate_type,
                    aggregate_id=record.aggregate_id,
                )
            )
            continue
        appended += result.appended
        duplicates += result.duplicates
        touched |= result.type_hashes
        head = result.head
    newly_parked = 0
    if parked:
        result = log.append(source, [], parked, binary_ids=rule)
        head, newly_parked = result.head, result.parked
    return AppendResult(appended, duplicates, newly_parked, head, frozenset(touched))


def _record_as_raw(record: LogRecord) -> dict[str, object]:
    return {
        "event_id": record.event_id,
        "aggregate_type": record.aggregate_type,
        "aggregate_id": record.aggregate_id,
        "event_type": record.event_type,
        "payload": record.payload,
        "headers": record.headers,
        "tenant": record.tenant,
        "occurred_at": None if record.occurred_at is None else record.occurred_at.isoformat(),
    }
