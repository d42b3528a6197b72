"""An SQL outbox table's shape: its columns, as the database's catalog describes them,
matched to the source's configured mapping, and how its id columns become text.

A table that does not match the configuration (no such table, a mapped column missing, a
position column that is not an integer or not unique, ``binary_ids`` on no binary id column)
is refused with
:class:`~outbox.errors.SourceConfigError`, naming the source, table and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import DOMAIN
from sqlalchemy.exc import SQLAlchemyError

from config import ColumnMap, SourceSettings
from outbox.db import describe_db_error
from outbox.errors import SourceConfigError, SourceError
from outbox.position_check import not_unique, position_is_unique
from outbox.rows import ID_FIELDS, IdFormat
from outbox.source_groups import source_key

_OPTIONAL = ("event_id", "occurred_at", "tenant", "headers")
_DEFAULTS = {name: field.default for name, field in ColumnMap.model_fields.items()}


@dataclass(frozen=True, slots=True)
class TableShape:
    """What a source reads from its outbox table: the table with its mapped columns,
    field -> actual column ('' for an optional one the table lacks), the id rules, and
    whether the timestamp column is numeric (Unix epochs) or of a date or time-stamp type."""

    table: sa.TableClause
    columns: dict[str, str]
    id_formats: dict[str, IdFormat]
    id_hints: dict[str, str]
    epoch_timestamps: bool = False
    date_timestamps: bool = False


def qualified_name(settings: SourceSettings) -> str:
    """The outbox table's name as messages give it (``schema.table`` with a schema)."""
    schema = settings.schema_name
    return f"{schema}.{settings.table}" if schema else settings.table


def read_shape(
    name: str, settings: SourceSettings, engine: sa.Engine, display_url: str
) -> TableShape:
    """The outbox table of source ``name`` as its catalog describes it, matched to the
    configured column mapping; :class:`SourceConfigError` naming the source, table and
    column when they do not match, :class:`SourceError` when the catalog cannot be read
    (``display_url``, the DSN without its password, names where)."""
    wanted = settings.columns.model_dump()
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            described = inspector.get_columns(settings.table, schema=settings.schema_name)
            unique = position_is_unique(inspector, described, settings)
    except sa.exc.NoSuchTableError:
        raise SourceConfigError(
            f"source {name!r}: outbox table {qualified_name(settings)!r} does not exist "
            f"(create it with: readmodel outbox init --source {name})"
        ) from None
    except SQLAlchemyError as exc:
        raise SourceError(f"source {name!r} ({display_url}): {describe_db_error(exc)}") from exc
    present = {c["name"].lower(): c["name"] for c in described}
    types = {c["name"]: c["type"] for c in described}
    if not present:
        raise SourceConfigError(
            f"source {name!r}: outbox table {qualified_name(settings)!r} does not exist "
            f"(create it with: readmodel outbox init --source {name})"
        )
    columns: dict[str, str] = {}
    for field, column in wanted.items():
        actual = present.get(column.lower()) if column else None
        if actual is None and column and field in _OPTIONAL and column != _DEFAULTS[field]:
            raise SourceConfigError(
                f"source {name!r}: outbox table {qualified_name(settings)!r} has no column "
                f'{column!r} (configured as columns.{field}; set it to "" if the table '
                "has no such column)"
            )
        if actual is None and column and field not in _OPTIONAL:
            if field == "dispatched_at" and settings.on_dispatch != "mark":
                columns[field] = ""
                continue
            raise SourceConfigError(
                f"source {name!r}: outbox table {qualified_name(settings)!r} has no column "
                f"{column!r} (configured as columns.{field})"
            )
        columns[field] = actual or ""
    _check_position_type(name, settings, columns["position"], types, engine.dialect)
    if not unique:
        raise not_unique(name, qualified_name(settings), columns["position"])
    id_formats, id_hints = _id_rules(
        name, settings, engine.dialect, {f: types[columns[f]] for f in ID_FIELDS if columns.get(f)}
    )
    table = sa.table(
        settings.table,
        *[sa.column(c) for c in columns.values() if c],
        schema=settings.schema_name,
    )
    occurred = columns.get("occurred_at")
    epochs = bool(occurred) and is_numeric(types[occurred])
    dates = bool(occurred) and isinstance(base_type(types[occurred]), sa.Date | sa.DateTime)
    return TableShape(table, columns, id_formats, id_hints, epochs, dates)


def _check_position_type(
    name: str,
    settings: SourceSettings,
    column: str,
    types: dict[str, sa.types.TypeEngine[Any]],
    dialect: sa.Dialect,
) -> None:
    """Refuse a position column that is not an integer: rows are claimed in position order
    (text sorts '10' before '9', a UUID at random) and acknowledged by position."""
    if isinstance(base_type(types[column]), sa.Integer):
        return
    raise SourceConfigError(
        f"source {name!r}: position column {column!r} of outbox table "
        f"{qualified_name(settings)!r} is {_type_name(types[column], dialect)}: the relay "
        "claims rows in position order and acknowledges them by position, so it needs an "
        "integer column (INTEGER or BIGINT, e.g. a sequence or identity); map "
        "columns.position to one"
    )


def _id_rules(
    name: str,
    settings: SourceSettings,
    dialect: sa.Dialect,
    types: dict[str, sa.types.TypeEngine[Any]],
) -> tuple[dict[str, IdFormat], dict[str, str]]:
    """How each mapped id column (field -> its declared type) becomes text, and the
    hints for binary ones read as text; refuses a ``binary_ids`` no id column uses."""
    setting = settings.binary_ids
    where = source_key(name)
    binary = {f: t for f, t in types.items() if is_binary(t)}
    if setting == "text":
        hints = {
            field: (
                f"the column is {_type_name(t, dialect)}: if it holds binary UUIDs, set "
                f'binary_ids = "uuid" in {where} (see the README on binary ids)'
            )
            for field, t in binary.items()
            if getattr(base_type(t), "length", None) == 16
        }
        return {}, hints
    if not binary:
        described = ", ".join(
            f"{settings.columns.model_dump()[f] or f} is {_type_name(t, dialect)}"
            for f, t in types.items()
        )
        raise SourceConfigError(
            f"source {name!r}: binary_ids = {setting!r} ({where}) reads binary id "
            f"columns, but no id column of {qualified_name(settings)!r} is binary ({described}): "
            f'remove binary_ids (the default "text") or map a binary id column'
        )
    return {field: setting for field in binary}, {}


def _type_name(column_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    try:
        return str(column_type.compile(dialect=dialect))
    except Exception:
        return repr(column_type)


def base_type(column_type: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """The type under a PostgreSQL domain (a domain over a domain too)."""
    for _ in range(16):
        if not isinstance(column_type, DOMAIN):
            break
        column_type = column_type.data_type
    return column_type


def is_binary(column_type: sa.types.TypeEngine[Any]) -> bool:
    """Whether a column of ``column_type`` holds bytes (BINARY, VARBINARY, BLOB, bytea, a
    domain over bytea)."""
    try:
        return base_type(column_type).python_type is bytes
    except NotImplementedError:  # a type the dialect does not know
        return False


def is_numeric(column_type: sa.types.TypeEngine[Any]) -> bool:
    """Whether a column of ``column_type`` holds numbers (INTEGER, BIGINT, NUMERIC, DOUBLE, a
    domain over one): a timestamp column of such a type holds Unix epochs."""
    return isinstance(base_type(column_type), sa.Integer | sa.Numeric | sa.Float)
