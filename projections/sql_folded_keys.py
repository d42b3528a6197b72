"""Text keys of a column that compares them without case (or trailing blanks), equal as the
database finds them.

:class:`projections.sql_tx.SqlTx` files a batch's writes and reads in dicts under their keys:
two keys Python finds unequal are two rows in a batch. A PostgreSQL ``citext`` column and a
SQLite ``COLLATE NOCASE`` one find ``'Ab'`` and ``'aB'`` one row: a batch writing both sent
two rows to one upsert (PostgreSQL: "ON CONFLICT DO UPDATE command cannot affect row a second
time"), and ``tx.get`` of one missed the other written in its batch. Such a column's key
converter gives a :class:`FoldedText`, the text as written (sent as it is), equal to text
that differs from it only in the case of ASCII letters.

A SQLite ``COLLATE RTRIM`` column finds ``'a'`` and ``'a  '`` one row: its keys are
:class:`TrimmedText`, equal to text differing only in trailing blanks.

That is SQLite's ``NOCASE`` (and ``RTRIM``) exactly. ``citext`` compares ``lower()`` of both
in the column's collation, which also folds other letters (``'É'`` and ``'é'``, by the C
library's or ICU's tables, which Python's do not match: ``lower('ΑΣ')`` is ``'ασ'``,
Python's ``'ας'``): keys differing there stay apart in a batch (two of them in one upsert
are refused: see :data:`projections.sql_writes._REFUSED`), and a Turkish collation's ``'I'``
is ``'ı'``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FoldedText", "TrimmedText", "folded", "folded_key", "trimmed", "trimmed_key"]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(text: str) -> str:
    return str.lower(text) if str.isascii(text) else str.translate(text, _ASCII_LOWER)


class FoldedText(str):
    """Text equal (and hashed alike) to text differing from it only in the case of A-Z."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return _fold(self) == _fold(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, str):
            return _fold(self) != _fold(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(_fold(self))

    def __repr__(self) -> str:
        return repr(_fold(self))  # a row lock's key (sql_prefetch.row_lock_key): one per row


def folded(value: Any) -> Any:
    """``value`` as such a column's key: text as a :class:`FoldedText`, anything else as it is."""
    return FoldedText(value) if type(value) is str else value


def folded_key(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The key converter of such a column whose values ``convert`` converts."""

    def key(value: Any) -> Any:
        if type(value) is FoldedText:
            return value
        return folded(convert(value))

    return key


class TrimmedText(str):
    """Text equal (and hashed alike) to text differing from it only in trailing blanks."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return str.rstrip(self, " ") == str.rstrip(other, " ")
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, str):
            return str.rstrip(self, " ") != str.rstrip(other, " ")
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str.rstrip(self, " "))

    def __repr__(self) -> str:
        return repr(str.rstrip(self, " "))  # a row lock's key: one per row


def trimmed(value: Any) -> Any:
    """``value`` as a ``RTRIM`` column's key: text as a :class:`TrimmedText`."""
    return TrimmedText(value) if type(value) is str else value


def trimmed_key(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The key converter of a ``RTRIM`` column whose values ``convert`` converts."""

    def key(value: Any) -> Any:
        if type(value) is TrimmedText:
            return value
        return trimmed(convert(value))

    return key
