"""``loads_exact``: the json module's exact values at orjson's speed where orjson reads
exactly, and orjson's refusals (of the same exception type) for what it refuses."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox import json_numbers
from outbox.json_numbers import loads_exact

# orjson reads -2**63 .. 2**64 - 1 exactly: these are 19 and 20 digits long
BOUNDARIES = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**18, 10**19]
BOUNDARIES += [10**19 - 1, 10**20 - 1, 10**20, -(10**18), -(10**19), -(10**19) + 1]


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
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:  # a lone surrogate, say
        with pytest.raises(orjson.JSONDecodeError):
            loads_exact(data[kind])
        return
    assert _tagged(loads_exact(data[kind])) == _tagged(json.loads(text))


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
