"""``loads_exact`` / ``dumps_exact``: the json module's exact values at orjson's speed where
orjson reads exactly, orjson's refusals (of the same exception type) for what it refuses,
and a writer and a reader that agree on every integer, however large, up to Python's limit."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox import json_numbers
from outbox.json_numbers import (
    IntegerTooLongError,
    UnwritableIntegerError,
    dumps_exact,
    loads_exact,
)

# orjson reads -2**63 .. 2**64 - 1 exactly: these are 19 and 20 digits long
BOUNDARIES = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**18, 10**19]
BOUNDARIES += [10**19 - 1, 10**20 - 1, 10**20, -(10**18), -(10**19), -(10**19) + 1]
BOUNDARIES += [10**308, 10**309, -(10**400)]  # past a double's range: orjson refuses them


def _tagged(value: Any) -> Any:
    """``value`` with each number tagged by its type (``1.8e19 == 2**64`` would pass) and a
    float's sign (``-0.0 == 0.0``)."""
    if isinstance(value, dict):
        return ("dict", [(key, _tagged(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [_tagged(item) for item in value])
    if isinstance(value, float):
        return ("float", value, math.copysign(1, value))
    return (type(value).__name__, value)


integers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from(BOUNDARIES),
    st.sampled_from(BOUNDARIES).map(lambda n: n + 1),
    st.sampled_from(BOUNDARIES).map(lambda n: n - 1),
)
digit_texts = st.from_regex(r'[\\"a-z \-.eE+]{0,3}[0-9]{17,25}[\\"a-z \-.eE+]{0,3}', fullmatch=True)
texts = st.one_of(st.text(max_size=8), digit_texts)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    integers,
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    documents,
    st.sampled_from([None, 2]),
    st.booleans(),
    st.sampled_from(["str", "bytes", "bytearray", "memoryview"]),
)
def test_loads_exact_reads_what_the_json_module_reads_and_refuses_what_orjson_refuses(
    document: Any, indent: int | None, ascii_only: bool, kind: str
) -> None:
    text = json.dumps(document, indent=indent, ensure_ascii=ascii_only)
    raw = text.encode("utf-8", "surrogatepass")
    data = {"str": text, "bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw)}
    # what orjson refuses but an integer past a double's range (which loads_exact reads)
    shadow = json.dumps(_huge_integers_as_zero(document), indent=indent, ensure_ascii=ascii_only)
    try:
        orjson.loads(shadow.encode("utf-8", "surrogatepass"))
    except orjson.JSONDecodeError:  # a lone surrogate, say
        with pytest.raises(orjson.JSONDecodeError):
            loads_exact(data[kind])
        return
    assert _tagged(loads_exact(data[kind])) == _tagged(json.loads(text))


def _huge_integers_as_zero(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _huge_integers_as_zero(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_huge_integers_as_zero(item) for item in value]
    if type(value) is int and abs(value) >= 10**308:
        return 0
    return value


@pytest.mark.parametrize(
    "text",
    [
        "[1, NaN]",
        "[1e400, 18446744073709551616]",
        '["\\ud800", 18446744073709551616]',
        '["\\udc00", -9223372036854775809]',
        b'\xef\xbb\xbf{"n": 18446744073709551616}',
        b'{"n": 18446744073709551616, "s": "\xff"}',
        "[18446744073709551616,]",
        "[18446744073709551616] x",
        "[" * 1025 + "18446744073709551616" + "]" * 1025,
        "[" * 1025 + "1" + "0" * 400 + "]" * 1025,
    ],
    ids=lambda text: repr(text)[:40],
)
def test_what_orjson_refuses_is_refused_with_its_error_though_it_holds_a_wide_integer(
    text: str | bytes,
) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text)
    with pytest.raises(orjson.JSONDecodeError):
        loads_exact(text)


def test_deep_nesting_orjson_takes_is_read_exactly() -> None:
    text = "[" * 1024 + f"18446744073709551616, {10**400}, 0.5" + "]" * 1024

    value = loads_exact(text)

    for _ in range(1023):
        [value] = value
    assert _tagged(value) == _tagged([2**64, 10**400, 0.5])


@pytest.mark.parametrize("data", [None, 1, 1.5, ["[1]"], type("Text", (str,), {})("[1]")])
def test_input_orjson_does_not_take_is_refused_as_orjson_refuses_it(data: Any) -> None:
    with pytest.raises(orjson.JSONDecodeError) as orjson_refusal:
        orjson.loads(data)
    with pytest.raises(orjson.JSONDecodeError) as refusal:
        loads_exact(data)
    assert str(refusal.value) == str(orjson_refusal.value)


@pytest.mark.parametrize(
    "number", ["1234567890123456789", "9999999999999999999", str(2**64 - 1), str(-(2**63))]
)
def test_integers_orjson_reads_exactly_are_read_by_orjson_alone(
    number: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snowflake id or a nanosecond timestamp (19 digits) is an int64: orjson reads it
    exactly, so the json module (5x slower) is not asked."""

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the json module was asked ({name})")

    monkeypatch.setattr(json_numbers, "json", Refusing())
    monkeypatch.setattr(json_numbers, "_DECODER", Refusing(), raising=False)
    text = f'{{"id": {number}, "at": "2026-03-14", "ns": [{number}, 1e-1234567890123456789]}}'

    assert loads_exact(text) == {"id": int(number), "at": "2026-03-14", "ns": [int(number), 0.0]}
    assert loads_exact(text.encode()) == loads_exact(text)


@pytest.mark.parametrize(
    "value",
    [10**308, 10**309, -(10**400), 10**4299 + 7],
    ids=["10**308", "10**309", "-10**400", "10**4299+7"],
)
def test_an_integer_past_a_doubles_range_is_written_and_read_back_exactly(value: int) -> None:
    """orjson refuses it ("number is infinity"): a JSON column or cache entry holding one
    would be written but could never be read back."""
    blob = dumps_exact({"n": value, "ratio": 0.5})

    assert _tagged(loads_exact(blob)) == _tagged({"n": value, "ratio": 0.5})
    assert _tagged(loads_exact(blob.decode())) == _tagged({"n": value, "ratio": 0.5})


def test_a_float_past_a_doubles_range_is_still_refused() -> None:
    with pytest.raises(orjson.JSONDecodeError, match="infinity"):
        loads_exact(f'{{"n": {10**400}, "huge": 1e400}}')


def test_past_pythons_digit_limit_the_reader_and_the_writer_refuse_naming_the_size() -> None:
    limit = sys.get_int_max_str_digits()
    text = '{"ok": 1, "n": ' + "7" * (limit + 1) + "}"

    with pytest.raises(IntegerTooLongError) as refused:
        loads_exact(text)
    with pytest.raises(UnwritableIntegerError) as unwritable:
        dumps_exact({"n": [1, -(10**limit)]})
    with pytest.raises(UnwritableIntegerError):
        dumps_exact({"n": object()}, default=lambda _: 10**limit)

    assert isinstance(refused.value, orjson.JSONDecodeError)
    assert f"an integer of {limit + 1} digits" in str(refused.value)
    assert refused.value.pos == text.index("7")
    assert isinstance(unwritable.value, TypeError)  # as orjson's refusals to write are
    assert f"-100000000000000000000000000000... ({limit + 1} digits)" in str(unwritable.value)
