"""JSON numbers without a double's rounding, where it matters.

orjson, the fast path everywhere, reads an integer past 64 bits as a double and refuses a
number past a double's range (``1e400``); PostgreSQL's jsonb holds both exactly. The log
keeps payload text as the outbox wrote it, so only two places need more: the duplicate
check, which must not take two events for one because their numbers round alike, and the
row check, which must say why a number no reader can hold is parked.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

import orjson

# A number a double may round: 16 or more significant digits, or an exponent (jsonb
# prints 1e23 as 24 digits). Matches inside strings too, which only costs the slow path.
_ROUNDED = re.compile(r"\d(?:\.?\d){15}|\d[eE]")


def same_json(a: str, b: str) -> bool:
    """Whether JSON texts ``a`` and ``b`` hold the same value: numbers compared by their
    exact decimal value, ``true`` never equal to ``1``."""
    if a == b:
        return True
    if _ROUNDED.search(a) or _ROUNDED.search(b):
        return _equal(_exact(a), _exact(b))
    return _equal(orjson.loads(a), orjson.loads(b))


def _exact(text: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal)
    except RecursionError:  # the json module's scanner recurses; orjson takes 1024 levels
        return _exact_iterative(text)


_TOKEN = re.compile(
    r'\s*(?:([\[\]{}:,])|("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)'
    r"|(true|false|null))",
    re.DOTALL,
)
_NO_KEY = object()


def _exact_iterative(text: str) -> Any:
    """``json.loads(text, parse_float=Decimal)`` without recursion, for nesting the json
    module refuses; ``text`` is JSON (the row check read it), so separators are not checked."""
    root: Any = _NO_KEY
    stack: list[Any] = []  # open containers
    keys: list[Any] = []  # per open container: the key awaiting its value (objects)

    def add(value: Any) -> None:
        nonlocal root
        if not stack:
            root = value
        elif isinstance(stack[-1], list):
            stack[-1].append(value)
        else:
            stack[-1][keys[-1]] = value
            keys[-1] = _NO_KEY

    position = 0
    while match := _TOKEN.match(text, position):
        position = match.end()
        mark, string, number, word = match.groups()
        if mark in ("[", "{"):
            container: Any = [] if mark == "[" else {}
            add(container)
            stack.append(container)
            keys.append(_NO_KEY)
        elif mark in ("]", "}"):
            stack.pop()
            keys.pop()
        elif mark is not None:  # ':' or ','
            continue
        elif string is not None:
            value = json.loads(string)
            if stack and isinstance(stack[-1], dict) and keys[-1] is _NO_KEY:
                keys[-1] = value
            else:
                add(value)
        elif number is not None:
            add(Decimal(number))
        else:
            add({"true": True, "false": False, "null": None}[word])
    if text[position:].strip() or stack or root is _NO_KEY:
        raise ValueError("not JSON")
    return root


def _equal(a: Any, b: Any) -> bool:
    """Exact equality of parsed JSON, without recursion (a payload may nest 1024 levels)."""
    pending = [(a, b)]
    while pending:
        a, b = pending.pop()
        if type(a) is bool or type(b) is bool:
            if a is not b:
                return False
        elif isinstance(a, dict):
            if not isinstance(b, dict) or a.keys() != b.keys():
                return False
            pending.extend((value, b[key]) for key, value in a.items())
        elif isinstance(a, list):
            if not isinstance(b, list) or len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif isinstance(b, dict | list) or not a == b:
            return False
    return True


def number_beyond_double(text: str) -> str | None:
    """The first number of JSON ``text`` past a double's range (``1e400``, 400 digits), as
    written; ``None`` when there is none or ``text`` is not JSON."""
    found: list[str] = []

    def number(token: str) -> float:
        if math.isinf(float(token)):
            found.append(token)
        return 0.0

    def refuse(token: str) -> None:  # NaN and Infinity: the json module's, not JSON's
        raise ValueError(token)

    try:
        json.loads(text, parse_float=number, parse_int=number, parse_constant=refuse)
    except (ValueError, RecursionError):
        return None
    return found[0] if found else None
