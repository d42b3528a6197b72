"""Naming the read store a run-time line is about, as the start-up lines do
(:func:`outbox.errors.read_store_at`): with several stores configured an operator must know
which ``[stores.NAME]`` failed; a lone ``[store]`` keeps its unnamed lines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from outbox.errors import EventLogError, StoreError, read_store_at


def store_where(store: Any) -> str | None:
    """``read store NAME at LOCATION`` (no password) of ``store``; ``None`` when it has no
    label, being the only store configured (:meth:`config.Settings.store_label`)."""
    label = getattr(store, "label", None)
    location = getattr(store, "location", None)
    return read_store_at(location, label) if label and location else None


def named(store: Any, text: str) -> str:
    """``text`` after ``READ STORE: `` when ``store`` is to be named, and does not yet."""
    where = store_where(store)
    return f"{where}: {text}" if where and where not in text else text


def store_field(store: Any) -> dict[str, str]:
    """``{"store": "read store NAME at LOCATION"}`` for a structured log record about
    ``store`` (``event parked``), when it is one of several; else no field."""
    where = store_where(store)
    return {"store": where} if where else {}


@contextmanager
def naming(store: Any) -> Iterator[None]:
    """A :class:`StoreError` raised in the block is said of ``store`` (:func:`named`); its
    type and cause stay, so callers tell an unreachable store from a refusal as before. An
    :class:`EventLogError` is the log's, not ``store``'s: left as it is."""
    try:
        yield
    except StoreError as exc:
        if isinstance(exc, EventLogError):
            raise
        if len(exc.args) == 1 and isinstance(exc.args[0], str):
            exc.args = (named(store, exc.args[0]),)
        raise
