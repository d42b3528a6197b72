"""Document reads by key and by page: a KEY typed from the command line (``:=JSON``) finds
and caches the document with that very ``_id``; a list's cursor pages through that list only,
from Python and the command line alike."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from bson import Decimal128, ObjectId

from projections.query_reader import JsonValue, QueryError
from tests.cli_helpers import run_cli, write_config
from tests.document_bank_helpers import Bank, cached_entries, opened
from workers.cli_query import _parse_key


def _config(of: Bank, tmp_path: Path) -> Path:
    """A config of ``of``'s projection, log and store, for ``readmodel query``."""
    return write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.document_query_fixtures:DocAccounts"],
            "store": {"url": of.log.engine.url.render_as_string(hide_password=False)},
            "stores": {"docs": {"url": of.url}},
        },
    )


def test_a_document_list_cursor_is_refused_by_another_list(bank: Bank, tmp_path: Path) -> None:
    """A page's ``next`` works for the list that returned it (projection, collection,
    filters and their types, tenant), from Python and the command line alike; any other
    list refuses it, as a table's does, rather than returning a page of its own."""
    bank.append(
        [opened("acme", f"a{i}", "ann") for i in (1, 2, 3)]
        + [opened("acme", "a4", "bob"), opened("globex", "g1", "ann")]
    )
    q = bank.queries
    first = q.list("doc_accounts", {"owner": "ann"}, tenant="acme", limit=1)
    assert [d["_id"] for d in first.rows] == ["a1"] and first.next is not None
    after = first.next
    same = q.list("doc_accounts", {"owner": "ann"}, tenant="acme", after=after, limit=1)
    assert [d["_id"] for d in same.rows] == ["a2"]

    other_lists: dict[str, Callable[[], Any]] = {
        "filter value": lambda: q.list(
            "doc_accounts", {"owner": "bob"}, tenant="acme", after=after
        ),
        "no filter": lambda: q.list("doc_accounts", {}, tenant="acme", after=after),
        "tenant": lambda: q.list("doc_accounts", {"owner": "ann"}, tenant="globex", after=after),
        "collection": lambda: q.list(
            "doc_accounts", {"owner": "ann"}, table="doc_currencies", tenant="acme", after=after
        ),
    }
    for what, read in other_lists.items():
        with pytest.raises(QueryError, match="belongs to another list") as refused:
            read()
        assert str(refused.value).startswith(f"cursor {after!r} belongs to another list"), what
    by_number = q.list("doc_accounts", {"balance": 0}, tenant="acme", limit=1).next
    with pytest.raises(QueryError, match="belongs to another list"):  # "0" is not 0
        q.list("doc_accounts", {"balance": "0"}, tenant="acme", after=by_number)
    for garbage in ("xyz", "e30"):  # not base64 BSON; "{}" in base64
        with pytest.raises(QueryError, match=f"cursor '{garbage}' is not a cursor this query"):
            q.list("doc_accounts", {"owner": "ann"}, tenant="acme", after=garbage)

    config = _config(bank, tmp_path)

    def query(*args: str, tenant: str = "acme") -> Any:
        return run_cli(
            ["query", "doc_accounts", *args, "--tenant", tenant, "--json", "--config", str(config)]
        )

    listed = query("-w", "balance:=0", "--limit", "2")
    assert listed.exit_code == 0, listed.output
    page = json.loads(listed.stdout)
    assert [d["_id"] for d in page["rows"]] == ["a1", "a2"]
    more = query("-w", "balance:=0", "--after", page["next"])
    assert more.exit_code == 0, more.output
    assert [d["_id"] for d in json.loads(more.stdout)["rows"]] == ["a3", "a4"]
    # the same list from Python: a JSON 0 is the number 0
    python = q.list("doc_accounts", {"balance": 0}, tenant="acme", after=page["next"])
    assert [d["_id"] for d in python.rows] == ["a3", "a4"]
    for args, tenant in [
        (("-w", "balance=0"), "acme"),  # text
        (("-w", "balance:=0", "-w", "owner=bob"), "acme"),
        (("-w", "balance:=0"), "globex"),
    ]:
        done = query(*args, "--after", page["next"], tenant=tenant)
        assert done.exit_code == 2, (args, done.output)
        assert f"error: cursor '{page['next']}' belongs to another list" in " ".join(
            done.stderr.split()
        ), (args, done.stderr)
        assert done.stdout == ""


def test_pages_of_ids_of_mixed_types_return_what_the_whole_list_does(bank: Bank) -> None:
    """MongoDB sorts ``_id``s across types (numbers, then text, objects, ObjectIds), while
    ``$gt`` compares within one type: pages still return every document of the list, in its
    order, wherever a page ends."""
    bank.append([opened("acme", "a1", "ann"), opened("globex", "g1", "ann")])
    oid = ObjectId()
    bank.store.database[bank.physical_accounts()].insert_many(
        [
            {"_id": _id, "owner": "ann", "tenant": "acme"}
            for _id in (oid, {"n": 1}, 2, 1)  # any order: the list sorts them
        ]
        + [{"_id": 3, "owner": "bob", "tenant": "acme"}]
    )
    q = bank.queries
    whole = q.list("doc_accounts", {"owner": "ann"}, tenant="acme")
    assert [d["_id"] for d in whole.rows] == [1, 2, "a1", {"n": 1}, str(oid)]
    for limit in (1, 2):
        seen, after = [], None
        while True:
            page = q.list("doc_accounts", {"owner": "ann"}, tenant="acme", after=after, limit=limit)
            assert len(page.rows) == limit or page.next is None, (limit, seen)
            seen += page.rows
            if (after := page.next) is None:
                break
        assert seen == whole.rows, limit


def test_readmodel_query_gets_a_numeric_id_by_a_typed_key(
    bank: Bank, redis_key_prefix: str, tmp_path: Path
) -> None:
    """A KEY is text (``42`` finds the ``_id`` ``"42"`` only); ``:=JSON`` gives it typed
    (``:=42`` finds the ``_id`` 42 only), from the CLI and, cached apart, from Python."""
    bank.append([opened("acme", "a1", "ann")])
    bank.store.database[bank.physical_accounts()].insert_many(
        [
            {"_id": 42, "owner": "number", "tenant": "acme"},
            {"_id": "42", "owner": "text", "tenant": "acme"},
            {"_id": {"n": 7}, "owner": "object", "tenant": "acme"},
        ]
    )
    config = _config(bank, tmp_path)

    def get(key: str, tenant: str = "acme") -> Any:
        done = run_cli(
            ["query", "doc_accounts", key, "--tenant", tenant, "--json", "--config", str(config)]
        )
        return done.exit_code, done.stdout, " ".join(done.stderr.split())

    assert get(":=42") == (
        0,
        '{"row":{"_id":42,"owner":"number","tenant":"acme"},"stale":false}\n',
        "",
    )
    assert get("42") == (
        0,
        '{"row":{"_id":"42","owner":"text","tenant":"acme"},"stale":false}\n',
        "",
    )
    assert get(':="42"')[:2] == get("42")[:2]  # JSON text is text
    assert get(':={"n": 7}')[1] == (
        '{"row":{"_id":{"n":7},"owner":"object","tenant":"acme"},"stale":false}\n'
    )
    for absent in (":=43", ":=42.5", ":=true", ":=42", "43"):
        tenant = "globex" if absent == ":=42" else "acme"  # another tenant's: not seen
        assert get(absent, tenant) == (0, '{"row":null,"stale":false}\n', ""), absent
    for key, message in {
        ":=4x": "error: KEY :=4x: not JSON (Extra data: line 1 column 2 (char 1)); give the key "
        "as text: 4x, or quoted: :='\"4x\"'",
        ':={"$gt": 1}': 'error: KEY :={"$gt": 1}: an object with $ keys (an operator) is '
        "refused; a key compares for equality",
        ":=9223372036854775808": "error: KEY :=9223372036854775808: 9223372036854775808 is "
        "out of range (integers are signed 64-bit; give a larger number as text: VALUE)",
    }.items():
        code, stdout, stderr = get(key)
        assert (code, stdout) == (2, ""), key
        assert message in stderr, (key, stderr)
    help_text = " ".join(re.sub("[│╭╮╰╯─]", " ", run_cli(["query", "--help"]).stdout).split())
    assert ":=42 is the number 42 (a document's _id 42, where 42 is the text '42')" in help_text

    q = bank.queries
    for _ in range(2):  # the second time from the cache: each key its own entry
        assert q.get("doc_accounts", 42, tenant="acme").value["owner"] == "number"
        assert q.get("doc_accounts", "42", tenant="acme").value["owner"] == "text"
    assert q.get("doc_accounts", JsonValue(42, "42"), tenant="acme").value["owner"] == "number"
    assert 'tenant:"acme":get:doc_accounts:[42]' in cached_entries(redis_key_prefix)
    assert 'tenant:"acme":get:doc_accounts:["42"]' in cached_entries(redis_key_prefix)

    # a decimal key is cached apart from the text of its digits, another document
    digits = "123456789012345678.91"
    bank.store.database[bank.physical_accounts()].insert_many(
        [
            {"_id": Decimal128(digits), "owner": "decimal", "tenant": "acme"},
            {"_id": digits, "owner": "digits", "tenant": "acme"},
        ]
    )
    for _ in range(2):
        assert q.get("doc_accounts", digits, tenant="acme").value["owner"] == "digits"
        exact = q.get("doc_accounts", JsonValue(Decimal(digits), digits), tenant="acme")
        assert exact.value["owner"] == "decimal"
    assert f'tenant:"acme":get:doc_accounts:["{digits}"]' in cached_entries(redis_key_prefix)
    marked = f'tenant:"acme":get:doc_accounts:[{{"$numberDecimal":"{digits}"}}]'
    assert marked in cached_entries(redis_key_prefix)


def test_a_whole_number_key_is_cached_and_invalidated_as_the_integer(
    bank: Bank, redis_key_prefix: str
) -> None:
    """MongoDB finds the ``_id`` 42 by ``:=42.0`` and ``:=4.2e1`` too; those keys share the
    entry of ``:=42``, which an event of aggregate ``42`` invalidates (an entry of their own,
    tagged ``account:42.0``, would stay stale)."""
    bank.append([opened("acme", "a1", "ann")])
    accounts = bank.store.database[bank.physical_accounts()]
    accounts.insert_one({"_id": 42, "owner": "old", "tenant": "acme"})
    q = bank.queries
    keys = (":=42.0", ":=4.2e1", ":=42", ":=-0.0")
    for key in keys[:3]:
        assert q.get("doc_accounts", _parse_key(key), tenant="acme").value["owner"] == "old"
    assert q.get("doc_accounts", 42.0, tenant="acme").value["owner"] == "old"  # from Python
    assert {e for e in cached_entries(redis_key_prefix) if "get:" in e} == {
        'tenant:"acme":get:doc_accounts:[42]'
    }
    accounts.update_one({"_id": 42}, {"$set": {"owner": "new"}})
    assert q.get("doc_accounts", _parse_key(":=42.0"), tenant="acme").value["owner"] == "old"
    bank.append([opened("acme", "42", "text")])  # an event of aggregate 42
    for key in keys[:3]:
        assert q.get("doc_accounts", _parse_key(key), tenant="acme").value["owner"] == "new"
    accounts.insert_one({"_id": 0, "owner": "zero", "tenant": "acme"})
    assert q.get("doc_accounts", _parse_key(keys[3]), tenant="acme").value["owner"] == "zero"
    assert 'tenant:"acme":get:doc_accounts:[0]' in cached_entries(redis_key_prefix)
    # past 64 bits no integer holds it: cached as the float, its tag spelled in digits
    assert q.get("doc_accounts", _parse_key(":=1e19"), tenant="acme").value is None
    assert {e for e in cached_entries(redis_key_prefix) if "get:" in e} == {
        'tenant:"acme":get:doc_accounts:[42]',
        'tenant:"acme":get:doc_accounts:[0]',
        'tenant:"acme":get:doc_accounts:[1e+19]',
    }


def test_readmodel_query_gets_an_objectid_id_by_its_extended_json_key(
    bank: Bank, redis_key_prefix: str, tmp_path: Path
) -> None:
    """A list shows an ObjectId ``_id`` as its hex text, which as a KEY is text (another
    ``_id``); ``:={"$oid": HEX}`` gets the ObjectId's document, from the CLI and, cached
    apart from the text's, from Python."""
    bank.append([opened("acme", "a1", "ann")])
    oid = ObjectId()
    hex_digits = str(oid)
    bank.store.database[bank.physical_accounts()].insert_many(
        [
            {"_id": oid, "owner": "oid", "tenant": "acme"},
            {"_id": hex_digits, "owner": "text", "tenant": "acme"},
        ]
    )
    config = _config(bank, tmp_path)

    def query(*args: str) -> tuple[int, str, str]:
        done = run_cli(
            ["query", "doc_accounts", *args, "--tenant", "acme", "--json", "--config", str(config)]
        )
        return done.exit_code, done.stdout, " ".join(done.stderr.split())

    listed = json.loads(query("-w", "owner=oid")[1])["rows"]
    assert [d["_id"] for d in listed] == [hex_digits]
    as_oid = f':={{"$oid": "{hex_digits}"}}'
    assert query(as_oid) == (
        0,
        f'{{"row":{{"_id":"{hex_digits}","owner":"oid","tenant":"acme"}},"stale":false}}\n',
        "",
    )
    assert json.loads(query(hex_digits)[1])["row"]["owner"] == "text"
    assert json.loads(query(f':={{"$oid": "{ObjectId()}"}}')[1]) == {"row": None, "stale": False}
    for key in (':={"$oid": "xyz"}', ':={"$oid": 5}'):
        assert query(key) == (
            2,
            "",
            f'error: KEY {key}: {{"$oid": ...}} takes the 24 hex digits of an ObjectId (as a '
            f'list shows it): :=\'{{"$oid": "65f0c0ffee0123456789abcd"}}\'',
        ), key
    refused = query(f':={{"$oid": "{hex_digits}", "n": 1}}')  # not extended JSON: an operator
    assert refused[0] == 2 and "an object with $ keys (an operator) is refused" in refused[2]
    help_text = " ".join(re.sub("[│╭╮╰╯─]", " ", run_cli(["query", "--help"]).stdout).split())
    assert ':=\'{"$oid": "<24 hex digits>"}\' a document\'s ObjectId _id' in help_text

    by_oid = query("-w", f'_id:={{"$oid": "{hex_digits}"}}')
    assert by_oid[0] == 0, by_oid
    assert [(d["_id"], d["owner"]) for d in json.loads(by_oid[1])["rows"]] == [(hex_digits, "oid")]
    by_text = json.loads(query("-w", f"_id={hex_digits}")[1])["rows"]
    assert [(d["_id"], d["owner"]) for d in by_text] == [(hex_digits, "text")]
    bad = query("-w", '_id:={"$oid": "xyz"}')
    assert bad == (
        2,
        "",
        'error: --where _id:={"$oid": "xyz"}: {"$oid": ...} takes the 24 hex digits of an '
        'ObjectId (as a list shows it): _id:=\'{"$oid": "65f0c0ffee0123456789abcd"}\'',
    )

    q = bank.queries
    typed = _parse_key(as_oid)
    for _ in range(2):  # the second time from the cache: each key its own entry
        assert q.get("doc_accounts", typed, tenant="acme").value["owner"] == "oid"
        assert q.get("doc_accounts", hex_digits, tenant="acme").value["owner"] == "text"
    assert {e for e in cached_entries(redis_key_prefix) if "get:" in e} == {
        f'tenant:"acme":get:doc_accounts:[{{"$oid":"{hex_digits}"}}]',
        f'tenant:"acme":get:doc_accounts:["{hex_digits}"]',
    }


def test_a_date_id_and_a_text_id_of_its_iso_text_are_cached_apart(
    bank: Bank, redis_key_prefix: str
) -> None:
    bank.append([opened("acme", "a1", "ann")])
    when = datetime(2026, 11, 26, 12, 30)
    bank.store.database[bank.physical_accounts()].insert_many(
        [
            {"_id": when, "owner": "date", "tenant": "acme"},
            {"_id": when.isoformat(), "owner": "text", "tenant": "acme"},
        ]
    )
    q = bank.queries
    for _ in range(2):  # the second time from the cache: each key its own entry
        assert q.get("doc_accounts", when, tenant="acme").value["owner"] == "date"
        assert q.get("doc_accounts", when.isoformat(), tenant="acme").value["owner"] == "text"
    assert {e for e in cached_entries(redis_key_prefix) if "get:" in e} == {
        'tenant:"acme":get:doc_accounts:[{"$date":"2026-11-26T12:30:00"}]',
        'tenant:"acme":get:doc_accounts:["2026-11-26T12:30:00"]',
    }
