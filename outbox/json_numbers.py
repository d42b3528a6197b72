"""JSON numbers without a double's rounding, where it matters.

orjson, the fast path everywhere, reads an integer past 64 bits as a double and refuses to
write one; it refuses a number past a double's range (``1e400``, or 400 digits). PostgreSQL's
jsonb holds both exactly, and the log keeps payload text as the outbox wrote it. So the
duplicate check compares numbers exactly, the row check says why a number no reader can hold
is parked, and :func:`loads_exact` / :func:`dumps_exact` (every read of the log, of JSON
columns, of cached values) keep an integer an exact ``int`` up to the 4300 digits Python
converts from and to text (``sys.get_int_max_str_digits()``): what one writes, the other
reads. A number with a fraction or an exponent stays a double.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
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
        return _exact_iterative(text, Decimal)


_TOKEN = re.compile(
    r'\s*(?:([\[\]{}:,])|("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)'
    r"|(true|false|null))",
    re.DOTALL,
)
_NO_KEY = object()


def _exact_iterative(text: str, number: Callable[[str], Any]) -> Any:
    """``json.loads(text)`` without recursion, for nesting the json module refuses, each
    number read by ``number``; ``text`` is JSON (orjson read it), so separators are not
    checked."""
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
        mark, string, token, word = match.groups()
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
        elif token is not None:
            add(number(token))
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


_orjson_loads = orjson.loads
_DIGITS = bytes.maketrans(b"0123456789", bytes(10))  # each digit as a NUL (never in JSON)
_DIGIT_RUN = bytes(19)  # -2**63 and 2**64 - 1, orjson's bounds, have 19 and 20 digits
_INT64_MIN_DIGITS = b"9223372036854775808"  # a 19-digit run after '-' above it is wide
_UINT64_MAX_DIGITS = b"18446744073709551615"  # a 20-digit run above it is wide
_NOT_AN_INTEGER_BEFORE = b'".eE+'  # a string, a fraction or an exponent holds the run
_NOT_AN_INTEGER_AFTER = b'".eE'
_MINUS = ord("-")
_EXPONENT = b"eE"
# What the json module takes and orjson refuses, that the slow path's hooks do not see: a
# surrogate escape (a lone one is refused), nesting past orjson's 1024 levels.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_DEPTH = 1024
# An integer token of more digits than a double's range (orjson refuses it as infinity):
# masked (as 0) where orjson checks the rest of a text.
_INTEGER_PAST_DOUBLE = re.compile(rb"(?:^|(?<=[\[,:\s]))-?[0-9]{309,}(?![.eE0-9])")


class IntegerTooLongError(orjson.JSONDecodeError):
    """JSON text holds an integer of more digits than Python reads from text
    (``sys.get_int_max_str_digits()``, 4300 by default)."""

    def __init__(self, digits: int, doc: str, pos: int) -> None:
        super().__init__(
            f"an integer of {digits} digits, past the {sys.get_int_max_str_digits()} digits "
            f"Python reads from text",
            doc,
            pos,
        )
        self.digits = digits


class UnwritableIntegerError(TypeError):
    """An integer of more digits than Python writes as text (and reads back): JSON text
    cannot hold it. A ``TypeError``, as orjson's refusals to write are."""

    def __init__(self, value: int) -> None:
        super().__init__(
            f"the integer {integer_text(value)} has more than the "
            f"{sys.get_int_max_str_digits()} digits Python writes as text: JSON of it could "
            f"not be read back"
        )
        self.value = value


def loads_exact(data: str | bytes | bytearray | memoryview) -> Any:
    """``orjson.loads(data)``, but each integer orjson would read as a double (below -2**63,
    above 2**64 - 1) is an exact ``int``, and one past a double's range (which orjson
    refuses) too: such text is read by the json module instead. Floats are the same doubles
    either way; anything else orjson refuses is refused, with its ``JSONDecodeError``, and
    so is an integer of more than ``sys.get_int_max_str_digits()`` digits
    (:class:`IntegerTooLongError`)."""
    kind = type(data)
    if kind is str:
        try:
            raw = data.encode()  # type: ignore[union-attr]
        except UnicodeEncodeError:  # a lone surrogate: orjson refuses the text
            return _orjson_loads(data)
    elif kind is bytes or kind is bytearray:
        raw = data  # type: ignore[assignment]
    elif kind is memoryview:
        raw = data = data.tobytes()  # type: ignore[union-attr]
    else:
        return _orjson_loads(data)  # its refusal of anything else, a str subclass too
    marked = raw.translate(_DIGITS)
    start = marked.find(_DIGIT_RUN)
    if start < 0 or not _holds_wide_integer(raw, marked, start):
        return _orjson_loads(data)
    return _loads_wide(data, raw)


def _holds_wide_integer(raw: bytes, marked: bytes, start: int) -> bool:
    """Whether one of the runs of 19 or more digits of JSON ``raw`` (``marked``: its digits
    as NULs; the first run at ``start``) is an integer orjson reads as a double or refuses:
    not part of a string, a fraction or an exponent, and past orjson's 64-bit bounds (a
    string that merely holds one, a space before it, only costs the json module's reading)."""
    size = len(marked)
    while start >= 0:
        end = start + len(_DIGIT_RUN)
        while end < size and marked[end] == 0:
            end += 1
        before = raw[start - 1] if start else 32
        after = raw[end] if end < size else 32
        if before not in _NOT_AN_INTEGER_BEFORE and after not in _NOT_AN_INTEGER_AFTER:
            length = end - start
            if before == _MINUS:
                if start < 2 or raw[start - 2] not in _EXPONENT:
                    if length > 19 or raw[start:end] > _INT64_MIN_DIGITS:
                        return True
            elif length > 20 or (length == 20 and raw[start:end] > _UINT64_MAX_DIGITS):
                return True
        start = marked.find(_DIGIT_RUN, end)
    return False


def _loads_wide(data: str | bytes | bytearray, raw: bytes | bytearray) -> Any:
    """``data`` (``raw``: its UTF-8) read by the json module, refused where orjson refuses
    it, save for an integer past a double's range."""
    try:
        text = data if type(data) is str else raw.decode()
    except UnicodeDecodeError:  # orjson checks the whole text's UTF-8 first
        return _orjson_loads(data)
    deep = raw.count(b"[") + raw.count(b"{") > _DEPTH
    if deep or _SURROGATE_ESCAPE.search(raw):
        _orjson_loads(_INTEGER_PAST_DOUBLE.sub(b"0", raw))  # its refusals, but of these
    try:
        try:
            return _DECODER.decode(text)
        except RecursionError:  # the json module's scanner recurses; orjson takes 1024 levels
            if not deep:
                _orjson_loads(_INTEGER_PAST_DOUBLE.sub(b"0", raw))
            return _exact_iterative(text, _number)
    except _NotJson as exc:
        raise orjson.JSONDecodeError(exc.reason, text, max(text.find(exc.token), 0)) from None
    except json.JSONDecodeError as exc:
        raise orjson.JSONDecodeError(exc.msg, exc.doc, exc.pos) from None
    except ValueError:  # int(): more digits than Python reads
        raise _too_long(text) from None


class _NotJson(ValueError):
    def __init__(self, reason: str, token: str) -> None:
        super().__init__(reason)
        self.reason, self.token = reason, token


def _finite_float(token: str) -> float:
    number = float(token)
    if number - number != 0:  # orjson refuses what a double cannot hold
        raise _NotJson("number is infinity when parsed as double", token)
    return number


def _no_constant(token: str) -> Any:
    raise _NotJson("unexpected character, expected a JSON value", token)


# Made once: json.loads(text, parse_float=...) makes a decoder per call.
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)


def _number(token: str) -> int | float:
    if "." in token or "e" in token or "E" in token:
        return _finite_float(token)
    return int(token)


def _too_long(text: str) -> IntegerTooLongError:
    limit = sys.get_int_max_str_digits()
    found = re.search(f"[0-9]{{{limit + 1},}}", text) if limit else None
    if found is None:  # not expected: int() refused no other text
        return IntegerTooLongError(limit + 1, text, 0)
    return IntegerTooLongError(len(found[0]), text, found.start())


_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def dumps_exact(
    value: Any, *, default: Callable[[Any], Any] | None = None, option: int | None = None
) -> bytes:
    """``orjson.dumps(value, default=..., option=...)``, but an integer past 64 bits (which
    orjson refuses) is written exactly, as its digits: :func:`loads_exact` reads it back.
    One of more digits than Python converts to text is refused
    (:class:`UnwritableIntegerError`, a ``TypeError`` as orjson's refusals are)."""
    try:
        return orjson.dumps(value, default=default, option=option)
    except orjson.JSONEncodeError as exc:
        if str(exc) != "Integer exceeds 64-bit range":
            raise
        wide = None
        if default is not None:
            given = default
            wide = lambda item: _wide_integers_as_digits(given(item))  # noqa: E731
        try:
            return orjson.dumps(_wide_integers_as_digits(value), default=wide, option=option)
        except RecursionError:
            raise exc from None
        except orjson.JSONEncodeError as refused:
            if isinstance(refused.__cause__, UnwritableIntegerError):  # raised in ``wide``
                raise refused.__cause__ from None
            raise


def _wide_integers_as_digits(value: Any) -> Any:
    """``value`` with each integer orjson cannot write as an ``orjson.Fragment`` of its
    digits (dicts and lists copied; orjson writes at most 255 levels)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
        try:
            return orjson.Fragment(int.__repr__(value))
        except ValueError:  # more digits than Python writes: nor would it read them
            raise UnwritableIntegerError(value) from None
    if isinstance(value, dict):
        return {k: _wide_integers_as_digits(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wide_integers_as_digits(v) for v in value]
    return value


def integer_text(value: int) -> str:
    """``value``'s digits for a message: at most about 60 characters (the first 30 digits
    and the count of a longer one, however long: Python writes at most 4300)."""
    size = _digit_count(value)
    if size <= 60:
        return int.__repr__(value)
    head = abs(value) // 10 ** (size - 30)
    return f"{'-' if value < 0 else ''}{head}... ({size} digits)"


def _digit_count(value: int) -> int:
    magnitude = abs(value)
    size = max(1, int(magnitude.bit_length() * 0.30102999566398120))  # log10(2), or 1 less
    return size + 1 if magnitude >= 10**size else size


def number_beyond_double(text: str) -> str | None:
    """The first number of JSON ``text`` with a fraction or an exponent past a double's
    range (``1e400``), as written; ``None`` when there is none or ``text`` is not JSON (an
    integer is read exactly: see :func:`loads_exact`)."""
    found: list[str] = []

    def number(token: str) -> float:
        if math.isinf(float(token)):
            found.append(token)
        return 0.0

    def refuse(token: str) -> None:  # NaN and Infinity: the json module's, not JSON's
        raise ValueError(token)

    try:
        json.loads(text, parse_float=number, parse_int=len, parse_constant=refuse)
    except (ValueError, RecursionError):
        return None
    return found[0] if found else None
