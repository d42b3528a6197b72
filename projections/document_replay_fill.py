"""Filling the next generation of a document projection's collections from the log (for
:class:`projections.document_replay.DocumentReplayer`): batches applied in as few
transactions as their failures allow, each moving the shadow's checkpoints (those of
``<name>__rebuild``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial

from pymongo.client_session import ClientSession

from outbox.envelope import Envelope
from projections.document_replay_tx import DocumentReplayTx, _Refused, every_failure
from projections.mongo_store import CHECKPOINTS, lane_id
from projections.replay_ranges import apply_in_ranges
from projections.replay_types import ReplaySummary
from projections.store import Lane


class DocumentShadowFill(DocumentReplayTx):
    """Applies a source's events to the shadow generation and keeps its checkpoints."""

    shadow_projection: str

    def _shadow_checkpoint(self, session: ClientSession, *, source: str, position: int) -> None:
        self._prove_lease(session)
        self.database[CHECKPOINTS].update_many(
            {"projection": self.shadow_projection, "source": source},
            {"$set": {"position": position}},
            session=session,
        )

    def _init_shadow_checkpoints(self, sources: Sequence[str]) -> None:
        documents = [
            {
                "_id": lane_id(Lane(self.shadow_projection, source, partition)),
                "projection": self.shadow_projection,
                "source": source,
                "partition": partition,
                "position": 0,
            }
            for source in sources
            for partition in range(self.projection.partitions)
        ]
        if documents:

            def work(session: ClientSession) -> None:
                self._prove_lease(session)
                self.database[CHECKPOINTS].insert_many(documents, session=session)

            self._attempt(work)

    def _apply_overruled(self, summary: ReplaySummary) -> None:
        """:meth:`projections.replay_fill.ShadowFill._apply_overruled` for documents."""
        for source, events in self._overruled().items():
            if events:
                self._shadow_batch(source, events, summary, checkpoint=False)

    def _shadow_batch(
        self,
        source: str,
        events: list[Envelope],
        summary: ReplaySummary,
        *,
        checkpoint: bool = True,
    ) -> None:
        """Apply ``events`` in as few transactions as their failures allow
        (:class:`projections.replay_ranges.BatchRanges`; not recursion: see
        :meth:`projections.replay_fill.ShadowFill._shadow_batch`); ``checkpoint``: whether
        each transaction sets the shadow's checkpoint to its last event."""

        def attempt(batch: list[Envelope]) -> int:
            work = partial(self._shadow_work, source=source, events=batch, checkpoint=checkpoint)
            return self._attempt(work, hand_back=every_failure)  # rolled back, undone

        def committed(batch: list[Envelope], applied: int) -> None:
            summary.applied[source] = summary.applied.get(source, 0) + applied
            self._report(source, batch[-1].position or 0, applied)

        apply_in_ranges(events, attempt, committed, fail=self._policy.fail, refused=_Refused)

    def _shadow_work(
        self,
        session: ClientSession,
        *,
        source: str,
        events: list[Envelope],
        checkpoint: bool = True,
    ) -> int:
        applied = self._apply(session, events, self._shadow)
        self._prove_lease(session)
        if checkpoint:
            self.database[CHECKPOINTS].update_many(
                {"projection": self.shadow_projection, "source": source},
                {"$set": {"position": events[-1].position or 0, "updated_at": datetime.now(UTC)}},
                session=session,
            )
        return applied
