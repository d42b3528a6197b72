"""``readmodel query``: read a projection from the command line, JSON out."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Annotated, Any

import orjson
import typer
from bson import ObjectId
from rich.markup import escape

from outbox.json_numbers import dumps_exact
from outbox.rows import json_safe
from projections.consistency import ConsistencyError
from projections.query_errors import QueryError
from projections.query_values import JsonValue
from projections.store_names import named, naming
from projections.subscriptions import unfed_subscriptions
from workers.cli_support import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    INTERRUPTED_CLOSING,
    ConfigOption,
    err,
    fail,
    guarded,
    interrupted_saying,
    load,
    require_migrated,
)


def query_command(
    projection: Annotated[str, typer.Argument(help="Projection name.")],
    key: Annotated[
        str | None,
        typer.Argument(
            help="Primary key to get, as text (a,b for a composite key; a table reads it as "
            "its columns' types); :=JSON gives it typed: :=42 is the number 42 (a document's "
            "_id 42, where 42 is the text '42'), :='[1,\"a\"]' a composite key, "
            ':=\'{"$oid": "<24 hex digits>"}\' a document\'s ObjectId _id (a list shows it '
            "as its hex text). With --name, the query's first argument.",
            show_default=False,
        ),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            "-w",
            help="field=value (repeatable): list rows with these column values; with --name, "
            "a keyword argument of the query. field=value gives text (typed by the column's "
            "type in a table); field:=JSON gives a JSON value: qty:=3, paid:=true, "
            "note:=null, code:='\"007\"' (text), tags:='[\"a\"]' (documents only), "
            '_id:=\'{"$oid": "<24 hex digits>"}\' (a document\'s ObjectId).',
            show_default=False,
        ),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(
            "--table",
            "-t",
            help="Table or collection (default: the projection's first).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="Run the projection's declared @query of this name."),
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="Cursor: the 'next' of the previous page.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows per page (lists).")] = 50,
    allow_unindexed: Annotated[
        bool,
        typer.Option("--allow-unindexed", help="Allow filtering on columns without an index."),
    ] = False,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            help="Read this tenant's rows (required by a projection with a tenant_column).",
            show_default=False,
        ),
    ] = None,
    wait_for: Annotated[
        str | None,
        typer.Option(
            "--wait-for",
            help="Consistency token: wait until the projection has applied this event. "
            "SOURCE:POSITION (log position) or event:ID / ID (the outbox event id).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds to wait for --wait-for.")
    ] = 5.0,
    stale_ok: Annotated[
        bool,
        typer.Option(
            "--stale-ok",
            help="If the wait times out (or the event is parked), print the current value "
            "anyway, marked stale, with a warning on stderr (exit 0).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Compact JSON on one line.")] = False,
    config: ConfigOption = None,
) -> None:
    """Read a projection: get by KEY, list with --where (cursor pages), or run a --name query.

    Prints JSON: {"row": ...} for a get (null when absent), {"rows": [...], "next": CURSOR}
    for a list (next is null on the last page), {"result": ...} for a named query; each
    with "stale". Exit codes: 0 ok, 1 consistency wait failed, 2 unknown projection,
    table, column or query (the message lists the known ones) or a read store not at the
    schema revision this readmodel needs (run 'readmodel migrate'), 3 store unreachable.
    A projection subscribed to a source nothing feeds (which run, work and status refuse)
    is read, with a warning on stderr. Ctrl-C exits 130 saying that nothing was read.
    """
    from projections.query_service import open_queries

    fields = _parse_where(where or [])
    typed_key = None if key is None else _parse_key(key)
    if name is None and key is not None and fields:
        raise fail("give a KEY (get) or --where (list), not both", EXIT_CONFIG)
    if name is None and key is not None and (after or limit != 50):
        raise fail("--after and --limit page a list (--where), not a get", EXIT_CONFIG)
    if name is not None and (after or limit != 50 or table or allow_unindexed):
        raise fail(
            "--after, --limit, --table and --allow-unindexed are for a get or a list; a --name "
            "query takes its own parameters as --where NAME=VALUE (e.g. --where limit=10)",
            EXIT_CONFIG,
        )
    settings = load(config, log_level="warning")
    with interrupted_saying(QUERY_INTERRUPTED):
        require_migrated(settings, config)
        queries = guarded(open_queries, settings)
        output: dict[str, Any] | None = None
        try:
            _warn_unfed(settings, queries, projection)
            output = _run(
                queries, projection, typed_key, fields, table, name, after, limit,
                allow_unindexed, tenant, wait_for, timeout, stale_ok,
            )  # fmt: skip
        finally:
            if output is None:  # read: closed once it is printed
                queries.close()
    assert output is not None  # read, or the block exited
    try:
        _print(output, as_json)
    finally:
        close_queries(queries)


QUERY_INTERRUPTED = "interrupted (Ctrl-C) while querying: nothing read"


def close_queries(queries: Any) -> None:
    """Close the stores of ``queries``; Ctrl-C while one is slow to let go exits 130, the
    result printed before."""
    with interrupted_saying(INTERRUPTED_CLOSING):
        queries.close()


def _print(output: dict[str, Any], as_json: bool) -> None:
    """The result as JSON on stdout; a stale read's warning on stderr."""
    if output.pop("_warning", None):
        err.print(
            f"[yellow]warning:[/] stale read: {escape(output['_reason'])}",
            highlight=False,
            soft_wrap=True,
        )
    output.pop("_reason", None)
    option = 0 if as_json else orjson.OPT_INDENT_2
    typer.echo(dumps_exact(json_safe(output), option=option).decode())


def _warn_unfed(settings: Any, queries: Any, projection: str) -> None:
    """Warn of the read projection's subscriptions nothing feeds, which the commands that
    apply or report on events refuse (:mod:`projections.subscriptions`): a query reads the
    tables as they are, so it is served. With several stores, it names the projection's
    (:func:`named`)."""
    read = queries.projections.get(projection)
    if read is None:
        return
    engine = queries.stores["default"].engine
    store = queries.stores.get(read.store)
    for unfed in guarded(unfed_subscriptions, settings, [read], engine):
        message = named(store, unfed.message)
        err.print(
            f"[yellow]warning:[/] {escape(message)} (the query reads its tables as they "
            f"are; run, work and status refuse this configuration)",
            highlight=False,
            soft_wrap=True,
        )


def _run(
    queries: Any,
    projection: str,
    key: Any,
    fields: dict[str, Any],
    table: str | None,
    name: str | None,
    after: str | None,
    limit: int,
    allow_unindexed: bool,
    tenant: str | None,
    wait_for: str | None,
    timeout: float,
    stale_ok: bool,
) -> dict[str, Any]:
    wait = {"wait_for": wait_for, "timeout": timeout, "stale_ok": stale_ok, "tenant": tenant}
    output: dict[str, Any]
    declared = queries.projections.get(projection)
    naming_it = naming(queries.stores.get(declared.store) if declared is not None else None)
    if name is not None:
        args = [key] if key is not None else []
        result = guarded(_call, naming_it(queries.run), projection, name, *args, **wait, **fields)
        output = {"result": result.value, "stale": result.stale}
    elif key is not None:
        result = guarded(_call, naming_it(queries.get), projection, key, table=table, **wait)
        output = {"row": result.value, "stale": result.stale}
    else:
        result = guarded(
            _call,
            naming_it(queries.list),
            projection,
            fields,
            table=table,
            after=after,
            limit=limit,
            allow_unindexed=allow_unindexed,
            **wait,
        )
        output = {"rows": result.rows, "next": result.next, "stale": result.stale}
    if result.stale:
        output["_warning"] = True
        output["_reason"] = str(result.consistency)
    return output


def _call(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Exit 2 for a wrong query (unknown names, unindexed column), 1 for a failed wait."""
    try:
        return func(*args, **kwargs)
    except QueryError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    except ConsistencyError as exc:
        raise fail(str(exc), EXIT_FAILURE) from None


def _parse_where(items: list[str]) -> dict[str, Any]:
    """``field=value`` as text, ``field:=JSON`` as the JSON value, marked as such
    (:class:`JsonValue`: checked against a table's column; equality only: an object with
    ``$`` keys, a MongoDB operator, is refused)."""
    fields: dict[str, Any] = {}
    for item in items:
        field, sep, value = item.partition("=")
        typed = field.endswith(":")
        field = field.removesuffix(":").strip()
        if not sep or not field:
            raise fail(f"--where {item!r}: expected field=value or field:=JSON", EXIT_CONFIG)
        if field.startswith("$"):
            raise fail(
                f"--where {field}: a $ name is an operator; --where compares fields", EXIT_CONFIG
            )
        if field in fields:
            raise fail(f"--where {field}: given twice (one value per field)", EXIT_CONFIG)
        fields[field] = _json_value(field, value) if typed else value
    return fields


def _parse_key(text: str) -> Any:
    """The KEY argument: text, or ``:=JSON`` a typed value (:class:`JsonValue`)."""
    return _json_value(None, text[2:]) if text.startswith(":=") else text


def _json_value(field: str | None, text: str) -> JsonValue:
    """``text`` (of ``--where field:=``, or of the KEY for ``None``) as JSON, numbers exact
    (an ``int``, a ``Decimal`` for a fraction or an exponent), ``{"$oid": HEX}`` as that
    ObjectId (a SQL column refuses it); refused with exit 2 when it is not JSON, holds an
    operator or a number that no column or document holds (an integer past signed 64 bits,
    ``NaN``)."""
    if field:
        given, as_text, typed = f"--where {field}:={text}", f"text as {field}=", f"{field}:="
    else:
        given, as_text, typed = f"KEY :={text}", "the key as text: ", ":="
    if not text.strip():
        raise fail(
            f"{given}: no JSON after :=; give {as_text}VALUE, or typed: {typed}JSON",
            EXIT_CONFIG,
        )
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an integer of too many digits
        raise fail(
            f"{given}: not JSON ({exc}); give {as_text}{text}, or quoted: {typed}'\"{text}\"'",
            EXIT_CONFIG,
        ) from None
    if isinstance(value, dict) and list(value) == ["$oid"]:
        return JsonValue(_object_id(given, typed, value["$oid"]), text)
    if _has_operator(value):
        raise fail(
            f"{given}: an object with $ keys (an operator) is refused; "
            f"{'--where' if field else 'a key'} compares for equality",
            EXIT_CONFIG,
        )
    wrong = _out_of_range(value)
    if wrong is not None:
        raise fail(
            f"{given}: {wrong} is out of range (integers are signed 64-bit; "
            f"give a larger number as text: {f'{field}=' if field else ''}VALUE)",
            EXIT_CONFIG,
        )
    return JsonValue(value, text)


def _object_id(given: str, typed: str, digits: Any) -> ObjectId:
    """The ObjectId of a KEY or ``--where`` value given as ``:={"$oid": "<24 hex digits>"}``
    (extended JSON); ``typed`` is how it is given (``:=``, ``_id:=``)."""
    if not isinstance(digits, str) or not re.fullmatch("[0-9a-fA-F]{24}", digits):
        raise fail(
            f'{given}: {{"$oid": ...}} takes the 24 hex digits of an ObjectId '
            f'(as a list shows it): {typed}\'{{"$oid": "65f0c0ffee0123456789abcd"}}\'',
            EXIT_CONFIG,
        )
    return ObjectId(digits)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _out_of_range(value: Any) -> Any:
    """The first number of ``value`` that fits no stored integer or decimal, or ``None``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if not -(2**63) <= value < 2**63 else None
    if isinstance(value, Decimal):  # beyond a 128-bit decimal's exponents
        return value if not -6143 <= value.adjusted() <= 6144 else None
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict | list):
        return next((v for v in map(_out_of_range, items) if v is not None), None)
    return None


def _has_operator(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k.startswith("$") or _has_operator(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_operator(v) for v in value)
    return False
