"""What a :class:`projections.mongo_tx.DocumentTx` keeps to take back one handler's writes
(:meth:`~projections.mongo_tx.DocumentTx.undo`): a rebuild skipping a failed handler's
event drops its writes in memory instead of rolling its transaction back and applying the
events before it again (as :class:`projections.sql_tx.SqlTx` does for tables)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ABSENT: Any = object()
"""No entry there before the first write since :meth:`DocumentTx.undoable` (not a value)."""


@dataclass(slots=True)
class DocumentUndo:
    """Each key's entries before the first write since ``undoable()``: in the Tx's known
    documents (``known``, by ``(name, tenant, slot)``) and in its pending writes
    (``pending``, by ``(name, (tenant, slot))``), :data:`ABSENT` where there was none; the
    cache tags added since; taken back only while no flush has sent any of those writes
    (``sent``: a flush of the batch's earlier writes alone leaves these in memory)."""

    known: dict[Any, Any] = field(default_factory=dict)
    pending: dict[tuple[str, Any], Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    sent: bool = False

    def keep(
        self,
        known: dict[Any, Any],
        pending: dict[str, dict[Any, Any]],
        name: str,
        key: tuple[Any, Any],
    ) -> None:
        """Record what a write of ``key`` (tenant, slot) in collection ``name`` replaces in
        ``known`` and ``pending`` (the Tx's own), the first time since ``undoable()``."""
        at = (name, *key)
        if at not in self.known:
            self.known[at] = known.get(at, ABSENT)
        if (name, key) not in self.pending:
            writes = pending.get(name)
            self.pending[(name, key)] = ABSENT if writes is None else writes.get(key, ABSENT)

    def restore(
        self, known: dict[Any, Any], pending: dict[str, dict[Any, Any]], invalidated: set[str]
    ) -> None:
        """Put back in ``known``, ``pending`` and ``invalidated`` (the Tx's own) what they held
        before: an entry that was absent is removed (the others' write order stays), one
        that was there reassigned in its place (its order kept); a collection's pending
        writes left empty are removed, so the collections' order is as it was."""
        for key, before in self.known.items():
            if before is ABSENT:
                known.pop(key, None)
            else:
                known[key] = before
        for (name, key), before in self.pending.items():
            writes = pending.get(name)
            if writes is None:  # cannot be: every write recorded is in it, none sent
                continue
            if before is ABSENT:
                writes.pop(key, None)
                if not writes:
                    del pending[name]
            else:
                writes[key] = before
        invalidated.difference_update(self.tags)
