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
    return json.loads(text, parse_float=Decimal)


def _equal(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return a is b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_equal(value, b[key]) for key, value in a.items())
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_equal, a, b))
    return bool(a == b)


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
