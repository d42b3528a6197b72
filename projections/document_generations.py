"""Which physical collections hold a document projection's model: its generation.

MongoDB cannot rename several collections in one transaction, so a rebuild does not
rename: it writes a new generation of the projection's collections (``<name>__g<N>``;
generation 0, the one a projection starts with, is ``<name>`` itself) and its swap moves
the projection's document in ``rm_generations`` (``{_id: projection, generation: N,
retired: {"g<old N>": when}, retire_after: {"g<old N>": seconds}}``) to it, in the
transaction that sets the lanes' checkpoints. A live batch reads that document inside its
own transaction; readers check it after each read (:func:`read_current`), so a read that
met the old collections while they were dropped is done again on the new ones.

A retired generation is dropped only some time after the swap (``retire_after``, kept for a
later cleanup: the longer of its and the cleanup's own), for readers that resolved it just
before. A live batch writes its lane's checkpoint before its first document
(:meth:`projections.mongo_store.MongoStore._tx`), so no batch holds uncommitted writes in a
retired generation, however long it runs: one that wrote before the swap holds the swap
back until it commits, one that writes after conflicts and is redone on the new
generation. (A drop behind an open transaction's writes would wait for it, on the
SecantusDB test server holding every other operation back meanwhile.)

A rebuild records the generation it builds (``building``) before it creates its
collections, so that a generation above the recorded one is known for a shadow; any other
(the generation document was lost: a restore of an old dump, a hand edit) may be the only
full copy of the model, and is never dropped: :func:`check_recorded` refuses. Below the
current generation, only a generation a swap recorded retiring is dropped: any other
collection named so (a user's ``<collection>__g<n>``, one an older readmodel left) is left
alone with a warning, unless ``readmodel replay P --cleanup --drop-unmarked NAME`` names it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import structlog
from pymongo.client_session import ClientSession
from pymongo.errors import PyMongoError

from outbox.errors import StoreError
from projections.api import Projection
from projections.rebuild_names import GENERATION_SUFFIX as _SUFFIX

GENERATIONS = "rm_generations"
logger = structlog.get_logger("readmodel.replay")
_T = TypeVar("_T")


def physical_name(collection: str, generation: int) -> str:
    return collection if generation == 0 else f"{collection}{_SUFFIX}{generation}"


def collections_at(projection: Projection, generation: int) -> dict[str, str]:
    """The projection's collections (declared name -> physical name) in ``generation``."""
    return {name: physical_name(name, generation) for name in projection.collections}


def generation_of(database: Any, projection: str, session: ClientSession | None = None) -> int:
    found = database[GENERATIONS].find_one({"_id": projection}, session=session)
    return 0 if found is None else int(found["generation"])


def other_generations(database: Any, projection: Projection, generation: int) -> list[str]:
    """Collections of the projection's other generations present in ``database`` (shadows an
    interrupted rebuild left, old ones a swap did not get to drop)."""
    current = set(collections_at(projection, generation).values())
    patterns = [
        re.compile(rf"{re.escape(name)}(?:{_SUFFIX}\d+)?\Z") for name in projection.collections
    ]
    return sorted(
        name
        for name in database.list_collection_names()
        if name not in current and any(p.match(name) for p in patterns)
    )


def _number(projection: Projection, collection: str) -> int:
    for name in projection.collections:
        if collection.startswith(f"{name}{_SUFFIX}"):
            return int(collection[len(name) + len(_SUFFIX) :])
    return 0


def drop_unrecorded_hint(projection: str, name: str) -> str:
    """The command that drops ``name``, a collection named like a generation of
    ``projection``'s that readmodel did not record."""
    return f"readmodel replay {projection} --cleanup --drop-unmarked {name}"


def check_recorded(
    database: Any,
    projection: Projection,
    *,
    starting: bool = False,
    allowed: Sequence[str] = (),
) -> None:
    """Raise :class:`StoreError` when the database holds collections of a generation above
    the recorded one that no rebuild recorded building (its record was lost; a cleanup or
    a rebuild would drop the only full copy of the model), or, with ``starting`` (a
    worker's start, which would start an empty model), when the recorded generation's
    collections are all missing while a higher generation's exist."""
    found = database[GENERATIONS].find_one({"_id": projection.name}) or {}
    generation = int(found.get("generation", 0))
    building = found.get("building")
    others = other_generations(database, projection, generation)
    higher = [n for n in others if _number(projection, n) > generation and n not in allowed]
    if starting:
        present = set(database.list_collection_names())
        if any(c in present for c in collections_at(projection, generation).values()):
            return
    else:
        higher = [n for n in higher if _number(projection, n) != building]
    if not higher:
        return
    top = max(_number(projection, n) for n in higher)
    raise StoreError(
        f"{projection.name}: {', '.join(higher)} belong to a generation above the one "
        f"{GENERATIONS} records for it ({generation}) that no rebuild recorded building: "
        f"its record was probably lost (a restore of an old dump, a hand edit). Nothing was "
        f"dropped. If generation {top} is the live model, record it again "
        f"(db.{GENERATIONS}.updateOne({{_id: '{projection.name}'}}, {{$set: {{generation: "
        f"{top}}}}}, {{upsert: true}})); if they are not readmodel's, rename them or drop them: "
        + "; ".join(f"'{drop_unrecorded_hint(projection.name, n)}'" for n in higher)
    )


def mark_building(database: Any, projection: str, generation: int | None) -> None:
    """Record that a rebuild builds ``generation`` (``None``: none does), for
    :func:`check_recorded`; the swap clears it in its transaction."""
    if generation is None:
        database[GENERATIONS].update_one({"_id": projection}, {"$unset": {"building": ""}})
        return
    database[GENERATIONS].update_one(
        {"_id": projection},
        {"$set": {"building": generation}, "$setOnInsert": {"generation": generation - 1}},
        upsert=True,
    )


def retired_field(generation: int) -> str:
    """The field of the generation document holding when ``generation`` was retired (and
    ``retire_after.g<N>``: the seconds its replay was to keep it)."""
    return f"retired.g{generation}"


class Leftovers(NamedTuple):
    drop: list[str]  # collections of other generations that may go
    kept: list[str]  # those of a generation retired less than ``retire_after`` ago
    expired: list[int]  # retired generations whose collections may go
    unrecorded: list[str]  # named like a generation that readmodel did not record: left alone


def leftovers(database: Any, projection: Projection, retire_after: float) -> Leftovers:
    """The collections of the projection's generations other than the current one: those
    ``rm_generations`` records (retired, or being built) may go, any other is unrecorded."""
    found = database[GENERATIONS].find_one({"_id": projection.name}) or {}
    generation = int(found.get("generation", 0))
    cutoff = datetime.now(UTC) - timedelta(seconds=retire_after)
    kept: set[str] = set()
    expired: list[int] = []
    recorded = found.get("retire_after") or {}
    for old, when in (found.get("retired") or {}).items():
        at = when.replace(tzinfo=UTC) if when.tzinfo is None else when
        # kept for the retire_after its replay ran with, if longer (it was killed waiting)
        wait = timedelta(seconds=max(0.0, float(recorded.get(old, 0)) - retire_after))
        if at > cutoff - wait:
            kept.update(collections_at(projection, int(old[1:])).values())
        else:
            expired.append(int(old[1:]))
    numbers = {int(old[1:]) for old in found.get("retired") or {}}
    if found.get("building") is not None:
        numbers.add(int(found["building"]))
    others = other_generations(database, projection, generation)
    known = [n for n in others if _number(projection, n) in numbers]
    return Leftovers(
        [n for n in known if n not in kept],
        [n for n in known if n in kept],
        expired,
        [n for n in others if n not in known],
    )


def warn_unrecorded(projection: str, names: Sequence[str]) -> None:
    if names:
        logger.warning(
            "collections named like replay leftovers left alone",
            projection=projection,
            collections=list(names),
            detail=f"{GENERATIONS} does not record them (a collection of yours, or one an "
            "older readmodel left): neither a replay nor --cleanup drops them; rename them if "
            "they are yours; drop a leftover with "
            + "; ".join(f"'{drop_unrecorded_hint(projection, n)}'" for n in names),
        )


def forget_retired(database: Any, projection: str, generations: list[int]) -> None:
    """Forget retired generations whose collections were dropped."""
    if generations:
        database[GENERATIONS].update_one(
            {"_id": projection},
            {
                "$unset": {
                    f: "" for g in generations for f in (retired_field(g), f"retire_after.g{g}")
                }
            },
        )


def read_current(
    database: Any, projection: str, read: Callable[[int], _T], known: int | None = None
) -> tuple[_T, int]:
    """``read(generation)`` on the current generation, and that generation: the generation
    is read again after the read, which is done again if a swap came between (its
    collections may have been dropped under it). ``known`` saves the first look-up."""
    generation = generation_of(database, projection) if known is None else known
    while True:
        try:
            result = read(generation)
        except PyMongoError:
            now = generation_of(database, projection)
            if now == generation:
                raise
            generation = now
            continue
        now = generation_of(database, projection)
        if now == generation:
            return result, generation
        generation = now
