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


def _trim(text: str) -> str:
    return str.rstrip(text, " ")


class _ComparedText(str):
    """Text equal (and hashed alike) to text of the same :meth:`identity`."""

    @staticmethod
    def identity(text: str) -> str:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.identity(self) == self.identity(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.identity(self) != self.identity(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.identity(self))

    def __repr__(self) -> str:
        return repr(
            self.identity(self)
        )  # a row lock's key (sql_prefetch.row_lock_key): one per row


class FoldedText(_ComparedText):
    """Text equal (and hashed alike) to text differing from it only in the case of A-Z."""

    identity = staticmethod(_fold)


class TrimmedText(_ComparedText):
    """Text equal (and hashed alike) to text differing from it only in trailing blanks."""

    identity = staticmethod(_trim)


def _keyed_as(kind: type[_ComparedText]) -> Callable[[Any], Any]:
    def as_key(value: Any) -> Any:
        return kind(value) if type(value) is str else value

    return as_key


def _key_of(kind: type[_ComparedText]) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    as_key = _keyed_as(kind)

    def key_of(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def key(value: Any) -> Any:
            return value if type(value) is kind else as_key(convert(value))

        return key

    return key_of


folded = _keyed_as(FoldedText)
"""``value`` as a case-folding column's key: text as a :class:`FoldedText`, anything else as
it is."""
folded_key = _key_of(FoldedText)
"""The key converter of such a column whose values ``convert`` converts."""
trimmed = _keyed_as(TrimmedText)
"""``value`` as a ``RTRIM`` column's key: text as a :class:`TrimmedText`."""
trimmed_key = _key_of(TrimmedText)
"""The key converter of a ``RTRIM`` column whose values ``convert`` converts."""
