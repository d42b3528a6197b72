"""Turn raw outbox rows into log records, or into parked rows with the reason they are malformed."""

from __future__ import annotations

import base64
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson

from config import TimestampUnit
from outbox.envelope import aggregate_hash
from outbox.json_numbers import IntegerTooLongError, loads_exact, number_beyond_double
from outbox.timestamps import BadTimestamp, occurred_at

# The claim query selects the outbox columns in this order; absent optional columns are NULL.
FIELDS = (
    "position",
    "event_id",
    "aggregate_type",
    "aggregate_id",
    "event_type",
    "payload",
    "occurred_at",
    "tenant",
    "headers",
)

ID_FIELDS = ("event_id", "aggregate_id")
"""The fields whose binary columns a source may read as UUIDs or hex (:data:`IdFormat`)."""

IdFormat = Literal["uuid", "uuid-swapped", "hex"]
"""How a binary id column becomes text: ``str(uuid.UUID(bytes=value))`` (what MySQL's
``BIN_TO_UUID(value)`` gives) for exactly 16 bytes, the same with MySQL's time-swapped layout
(``UUID_TO_BIN(u, 1)``, read back as ``BIN_TO_UUID(value, 1)``), or lowercase hex."""


def id_type_clash(
    rows: Sequence[Sequence[Any]], names: Mapping[str, str], formats: Mapping[str, IdFormat]
) -> str | None:
    """The first id value whose Python type contradicts its column's decision (bytes in a
    column read as text, text in a column read as binary), described; ``None`` if none
    does. A column whose type changed (``ALTER TABLE``) after the source read it."""
    for row in rows:
        for index, field in ((1, "event_id"), (3, "aggregate_id")):
            value = row[index]
            if not names.get(field) or value is None:
                continue
            binary = isinstance(value, bytes | bytearray | memoryview)
            if binary != (field in formats):
                return (
                    f"column {names[field]!r} gave {type(value).__name__}, "
                    f"read as {formats.get(field, 'text')}"
                )
    return None


def uuid_text(raw: bytes, form: IdFormat) -> str:
    """16 bytes as UUID text, in the layout ``form`` names."""
    if form == "uuid-swapped":  # UUID_TO_BIN(u, 1): time_hi, time_mid, time_low, rest
        raw = raw[4:8] + raw[2:4] + raw[0:2] + raw[8:]
    return str(uuid.UUID(bytes=raw))


@dataclass(slots=True)
class LogRecord:
    """A well-formed outbox row, ready to append to the log."""

    source_position: Any
    event_id: str
    tenant: str | None
    aggregate_type: str
    aggregate_id: str
    key_hash: int
    event_type: str
    payload: str
    headers: str | None
    occurred_at: datetime | None


@dataclass(slots=True)
class MalformedRow:
    """An outbox row that cannot become an event; it is parked, never dropped."""

    source_position: Any
    event_id: str | None
    reason: str
    raw: dict[str, Any]
    aggregate_type: str | None = None
    aggregate_id: str | None = None


class _Malformed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Unreadable:
    """The position of a claimed row its source could not read as an event (a MongoDB
    document without a numeric position, or with a value JSON cannot hold): the row is
    parked with ``reason``. ``value`` is the position as stored, if any."""

    value: Any
    reason: str

    def __str__(self) -> str:
        return str(self.value)


def decode_rows(
    rows: Iterable[Sequence[Any]],
    *,
    source: str,
    column_names: dict[str, str],
    default_tenant: str | None,
    max_payload_bytes: int,
    id_formats: Mapping[str, IdFormat] | None = None,
    id_hints: Mapping[str, str] | None = None,
    timestamp_unit: TimestampUnit = "auto",
) -> tuple[list[LogRecord], list[MalformedRow]]:
    """Split claimed rows (shaped like :data:`FIELDS`) into records and malformed rows.

    ``column_names`` maps each field to the outbox column it came from, for the
    reasons and the raw copy kept in the parking table. ``id_formats`` names the id
    fields (:data:`ID_FIELDS`) whose binary columns are read as UUIDs or hex; the others
    are read as text. ``id_hints`` adds a suggestion to the reason of an id field whose
    binary value is no text (a ``BINARY(16)`` column read as text: ``binary_ids``).
    ``timestamp_unit`` is the unit of numeric timestamps (:mod:`outbox.timestamps`).
    """
    formats = id_formats or {}
    hints = id_hints or {}
    records: list[LogRecord] = []
    malformed: list[MalformedRow] = []
    for row in rows:
        if isinstance(row[0], Unreadable):
            malformed.append(_parked(row, column_names, formats, row[0].reason))
            continue
        try:
            records.append(
                _decode(
                    row,
                    source,
                    column_names,
                    formats,
                    hints,
                    default_tenant,
                    max_payload_bytes,
                    timestamp_unit,
                )
            )
        except _Malformed as exc:
            malformed.append(_parked(row, column_names, formats, str(exc)))
        except Exception as exc:  # a value no check foresaw: park the row, never block the rest
            reason = f"cannot read the row: {type(exc).__name__}: {exc}"
            malformed.append(_parked(row, column_names, formats, reason))
    return records, malformed


def _parked(
    row: Sequence[Any],
    column_names: dict[str, str],
    formats: Mapping[str, IdFormat],
    reason: str,
) -> MalformedRow:
    position = row[0].value if isinstance(row[0], Unreadable) else row[0]
    return MalformedRow(
        source_position=position,
        event_id=_parked_id(row[1], formats.get("event_id")),
        reason=reason,
        raw=raw_row(row, column_names),
        aggregate_type=_optional_str(row[2]),
        aggregate_id=_parked_id(row[3], formats.get("aggregate_id")),
    )


def _parked_id(value: Any, form: IdFormat | None) -> str | None:
    """A parked row's id as its event would have had it, when the value allows."""
    if form is not None and isinstance(value, bytes | bytearray | memoryview):
        if form == "hex" and value:
            return bytes(value).hex()
        if form != "hex" and len(value) == 16:
            return uuid_text(bytes(value), form)
    return _optional_str(value)


def _decode(
    row: Sequence[Any],
    source: str,
    names: dict[str, str],
    formats: Mapping[str, IdFormat],
    hints: Mapping[str, str],
    default_tenant: str | None,
    max_payload_bytes: int,
    timestamp_unit: TimestampUnit,
) -> LogRecord:
    position, event_id, agg_type, agg_id, event_type, payload, occurred, tenant, headers = row
    aggregate_type = _required_text(agg_type, names["aggregate_type"], "aggregate type")
    aggregate_id = _id_text(agg_id, "aggregate_id", "aggregate id", position, names, formats, hints)
    kind = _required_text(event_type, names["event_type"], "event type")
    if names.get("event_id"):
        event_id = _id_text(event_id, "event_id", "event id", position, names, formats, hints)
    else:
        event_id = f"{source}:{position}"
    payload_text = _json_text(payload, names["payload"], "payload", max_payload_bytes)
    if payload_text is None:
        raise _Malformed(f"missing payload (column {names['payload']!r} is NULL)")
    # JSON null (Prisma's JsonNull) in the headers column means no headers, as SQL NULL does.
    headers_text = _json_text(headers, names.get("headers") or "headers", "headers", None, True)
    try:
        when = occurred_at(occurred, names.get("occurred_at") or "timestamp", timestamp_unit)
    except BadTimestamp as exc:
        raise _Malformed(str(exc)) from None
    tenant_value = default_tenant
    if tenant is not None:  # an empty tenant column is no tenant: the source's default
        tenant_value = _optional_text(tenant, names["tenant"]) or default_tenant
    return LogRecord(
        source_position=position,
        event_id=event_id,
        tenant=tenant_value,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        key_hash=aggregate_hash(aggregate_type, aggregate_id),
        event_type=kind,
        payload=payload_text,
        headers=headers_text,
        occurred_at=when,
    )


def _text(value: Any, column: str, what: str) -> str:
    if type(value) is str:  # the common case first: this runs for every column of every row
        pass
    elif isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{what} (column {column!r}) is not valid UTF-8") from None
    elif isinstance(value, uuid.UUID | int | Decimal):
        value = str(value)
    elif not isinstance(value, str):
        raise _Malformed(f"{what} (column {column!r}) has unsupported type {type(value).__name__}")
    if "\x00" in value:
        raise _Malformed(f"{what} (column {column!r}) contains a NUL character")
    return value


def _required_text(value: Any, column: str, what: str) -> str:
    if value is None:
        raise _Malformed(f"missing {what} (column {column!r} is NULL)")
    text = _text(value, column, what).strip()
    if not text:
        raise _Malformed(f"missing {what} (column {column!r} is empty)")
    return text


def _id_text(
    value: Any,
    field: str,
    what: str,
    position: Any,
    names: dict[str, str],
    formats: Mapping[str, IdFormat],
    hints: Mapping[str, str],
) -> str:
    """An id as its column's declared type says: a binary column read as a UUID or as hex
    (:data:`IdFormat`), any other as text."""
    column = names[field]
    form = formats.get(field)
    if form is None:
        try:
            return _required_text(value, column, what)
        except _Malformed as exc:
            hint = hints.get(field)
            if hint and isinstance(value, bytes | bytearray | memoryview) and len(value) == 16:
                raise _Malformed(f"{exc}: {hint}") from None
            raise
    where = f"row {names['position']} = {position}"
    if value is None:
        raise _Malformed(f"missing {what} (column {column!r} is NULL)")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise _Malformed(
            f"{what} (column {column!r}, {where}) has type {type(value).__name__}, expected binary"
        )
    raw = bytes(value)
    if form == "hex":
        if not raw:
            raise _Malformed(f"missing {what} (column {column!r} is empty)")
        return raw.hex()
    if len(raw) != 16:
        raise _Malformed(
            f"{what} (column {column!r}, {where}) is {len(raw)} bytes, not 16: the column "
            f"is read as binary UUIDs"
        )
    return uuid_text(raw, form)


def _optional_text(value: Any, column: str) -> str | None:
    text = _text(value, column, "tenant").strip()
    return text or None


def _json_text(
    value: Any, column: str, what: str, limit: int | None, null_ok: bool = False
) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        text = orjson.dumps(value).decode()
    else:
        text = _text(value, column, what)
    if limit is not None and len(text) > limit // 4 and len(text.encode()) > limit:
        raise _Malformed(f"{what} is {len(text.encode())} bytes, above max_payload_bytes = {limit}")
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = _exact_json(text, column, what)  # an integer past a double's range is read
    if parsed is None and null_ok:
        return None
    if not isinstance(parsed, dict):
        raise _Malformed(
            f"{what} (column {column!r}) is a JSON {_JSON_NAMES.get(type(parsed), 'value')}, "
            f"expected an object"
        )
    if "\\u0000" in text and _contains_nul(parsed):
        raise _Malformed(f"{what} (column {column!r}) contains \\u0000, which the log cannot store")
    return text


def _exact_json(text: str, column: str, what: str) -> Any:
    """JSON ``text`` as projections read it (``loads_exact``: integers exact, however large
    up to Python's 4300 digits); :class:`_Malformed` saying why when they cannot."""
    try:
        return loads_exact(text)
    except IntegerTooLongError as exc:
        raise _Malformed(
            f"{what} (column {column!r}) holds an integer of {exc.digits} digits: readmodel "
            f"reads integers of at most {sys.get_int_max_str_digits()} digits (Python's limit; "
            f"write it as a string)"
        ) from None
    except orjson.JSONDecodeError as exc:
        huge = number_beyond_double(text)
        if huge is not None:
            raise _Malformed(
                f"{what} (column {column!r}) holds the number {huge[:40]}, beyond the range of "
                f"a double: readmodel reads a JSON number with a fraction or an exponent as "
                f"a double and would lose its value (write it as a string)"
            ) from None
        raise _Malformed(f"{what} (column {column!r}) is not valid JSON: {exc}") from None


_JSON_NAMES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _contains_nul(value: Any) -> bool:
    """Whether parsed JSON holds a NUL (text "\\\\u0000" is an escaped backslash, not a NUL)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


def _optional_str(value: Any) -> str | None:
    return None if value is None else _safe_str(value)


def _safe_str(value: Any) -> str:
    """Text for a parked row's id columns: PostgreSQL text cannot hold NUL (a binary UUID
    column holds zero bytes), nor can it hold bytes that are not UTF-8."""
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", "backslashreplace")
    return str(value).replace("\x00", "\\x00")


def raw_row(row: Sequence[Any], names: dict[str, str]) -> dict[str, Any]:
    """A JSON-safe copy of a claimed row keyed by its outbox column names."""
    out: dict[str, Any] = {}
    for field, value in zip(FIELDS, row, strict=True):
        column = names.get(field)
        if column:
            out[column] = json_safe(value)
    return out


def json_safe(value: Any) -> Any:
    """``value`` made storable as JSON without losing what it was (bytes as base64)."""
    if isinstance(value, Unreadable):
        return json_safe(value.value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
            if "\x00" not in text:
                return text
        except UnicodeDecodeError:
            pass
        return {"$base64": base64.b64encode(raw).decode()}
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return repr(value)
