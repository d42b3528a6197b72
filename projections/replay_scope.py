"""Which part of the log a replay covers (table and document replays alike): the sources
its options choose, checked against the projection and the log heads; how many events lie
in a range; and the ranges an in-place replay re-applies, chasing the lanes' checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from outbox.schema import event_log
from outbox.source_groups import group_of
from projections.api import Projection
from projections.replay_types import BLUE_GREEN, IN_PLACE, ReplayOptions, ReplayRefused


def chase_checkpoints(after: int, furthest: Callable[[], int]) -> Iterator[tuple[int, int]]:
    """The ranges ``(from, to]`` an in-place replay re-applies: up to the lanes' furthest
    checkpoint (``furthest()``), then on from there as long as live batches moved it
    meanwhile. Each batch re-applies, under the lanes' locks, the events up to their
    checkpoints; an aggregate whose newer events were applied live before the replay
    re-applied an older one is set back by it, and put right only when the replay goes on
    to re-apply those newer events too. It stops once a range reached a checkpoint read
    after its last batch, so every event up to the checkpoints was re-applied after every
    older one."""
    done = after
    while True:
        target = furthest()
        if target <= done:
            return
        yield done, target
        done = target


def furthest_checkpoint(store: Any, projection: Projection, source: str) -> Callable[[], int]:
    """Reads the furthest checkpoint of ``projection``'s lanes of ``source`` in ``store``."""

    def furthest() -> int:
        done = store.checkpoints(projection.name)
        return max([done.get((source, p), 0) for p in range(projection.partitions)] + [0])

    return furthest


def check_options(
    projection: Projection, options: ReplayOptions, heads: Mapping[str, int]
) -> list[str]:
    """The sources to replay (a group's member sources found in the log ``heads``); raises
    :class:`ReplayRefused` for options that do not fit."""
    name = projection.name
    if options.mode == IN_PLACE and options.apply_skipped:
        raise ReplayRefused(
            "--apply-skipped goes with a blue/green rebuild: in place, the events an "
            "operator skipped stay left out (the live lanes never applied them)"
        )
    if options.mode == BLUE_GREEN and (options.source or options.tenant):
        raise ReplayRefused(
            "--source and --tenant replay part of the log in place; a blue/green rebuild "
            "needs every event: add --from-position N (0 for the whole log) on a "
            "replay-safe projection, or drop them"
        )
    if options.mode == IN_PLACE and not projection.replay_safe:
        raise ReplayRefused(
            f"projection {name!r} is not replay-safe: replaying a range in place would "
            f"apply events twice. Rebuild it blue/green (no --from-position), or declare "
            f"replay_safe = True if applying an event again changes nothing"
        )
    sources = projection.lane_sources(heads)
    if options.source is None:
        return _within_heads(name, options, sources, heads)
    # A group stands for its member sources; a member not in the log yet for itself.
    chosen = [s for s in sources if options.source in (s, group_of(s))]
    if not chosen and projection.reads(options.source):
        chosen = [options.source]
    if not chosen:
        known = ", ".join(sorted({*projection.sources, *sources})) or "none"
        raise ReplayRefused(
            f"projection {name!r} does not subscribe to source {options.source!r} "
            f"(its sources: {known})"
        )
    return _within_heads(name, options, chosen, heads)


def _within_heads(
    name: str, options: ReplayOptions, sources: list[str], heads: Mapping[str, int]
) -> list[str]:
    """``sources``, unless ``--from-position`` is past the log head of every one of them:
    no event lies there (a mistyped position, another source's, one of a log restored from an
    older backup), and replaying nothing would end as if the model had been repaired."""
    after = options.from_position
    if after is None or not sources or any(after <= heads.get(s, 0) for s in sources):
        return sources
    at = ", ".join(f"{s} {heads.get(s, 0)}" for s in sources)
    raise ReplayRefused(
        f"--from-position {after} is past the log head of every source {name!r} replays "
        f"({at}): nothing lies after it (positions are per source; --dry-run shows each log head)"
    )


def count_events(
    log_engine: sa.Engine,
    source: str,
    after: int,
    upto: int,
    types: list[str],
    tenant: str | None = None,
) -> int:
    """How many events of ``types`` of ``source`` (and ``tenant``) lie in ``(after, upto]``."""
    c = event_log.c
    query = sa.select(sa.func.count()).where(
        c.source == source, c.position > after, c.position <= upto, c.event_type.in_(types)
    )
    if tenant is not None:
        query = query.where(c.tenant == tenant)
    with log_engine.connect() as conn:
        return int(conn.execute(query).scalar_one())
