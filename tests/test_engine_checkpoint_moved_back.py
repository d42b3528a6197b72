"""A lane's checkpoint moved back behind what a worker process applied (a blue/green replay
starts a member source first logged during the rebuild again from 0: its events went to the
old tables only) is applied again once the sweep sees it, whether the sweep runs in the
worker's process (``readmodel run``) or in a sweeper process of its own (the Procfile)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.store_tables import checkpoints
from tests.projection_fixtures import Totals, account_totals, engine_on, log_events


def _totals(engine: sa.Engine) -> dict[str, tuple[int, int]]:
    with engine.connect() as conn:
        return {r.account: (r.events, r.total) for r in conn.execute(sa.select(account_totals))}


@pytest.mark.parametrize("sweeper", ["same process", "own process"])
def test_a_lane_whose_checkpoint_moved_back_is_applied_again_on_the_sweep(
    store_url: str, sweeper: str
) -> None:
    """The worker remembered how far it had brought each lane and skipped every message up to
    there without looking at the store: the sweep's messages for the lanes a replay started
    again (target: the log head, which the worker had reached) were all skipped, and the
    source's events stayed out of the read model until a later event of the source came.
    The sweep's messages carry the checkpoint it read, from which the worker learns it."""
    events = [(f"acct-{i % 3}", "Deposited", {"amount": i, "seq": i // 3 + 1}) for i in range(12)]
    expected = {f"acct-{a}": (4, sum(i for i in range(12) if i % 3 == a)) for a in range(3)}
    with engine_on(store_url, [Totals()]) as (log, store, engine):
        head = log_events(log, events, source="bank", aggregate_type="account")
        for lane in engine.lanes(engine.projection("totals")):
            engine.process_trigger(lane, head)
        assert _totals(log.engine) == expected
        with log.engine.begin() as conn:  # what the replay's swap leaves for such a source
            conn.execute(account_totals.delete())
            conn.execute(checkpoints.delete().where(checkpoints.c.projection == "totals"))
        sweeping = engine
        if sweeper == "own process":
            sweeping = ProjectionEngine(LogReader(log), [Totals()], {"default": store})
        try:
            lagging = sweeping.lagging()  # the sweep
        finally:
            if sweeping is not engine:
                sweeping.close()
        assert {(lane.source, checkpoint, at) for lane, checkpoint, at in lagging} == {
            ("bank", 0, head)
        }
        for lane, checkpoint, target in lagging:  # the messages it sends, to the worker
            engine.process_trigger(lane, target, checkpoint)
        assert _totals(log.engine) == expected
        assert engine.lagging() == []
