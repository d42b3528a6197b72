"""Run as a subprocess by tests/test_mongo_store.py: apply DocTotals to a MongoDB store,
and hang inside the first batch's transaction right after moving its checkpoint (it prints
``checkpointed``), to be SIGKILLed there.

    python -m tests.mongo_kill_child LOG_URL MONGO_URL
"""

from __future__ import annotations

import sys
import time
from typing import Any

from outbox.log import EventLog
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from tests.document_fixtures import DocTotals


def main(log_url: str, mongo_url: str) -> None:
    original = MongoStore._set_checkpoint

    def hang_after(self: MongoStore, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        print("checkpointed", flush=True)
        time.sleep(600)

    MongoStore._set_checkpoint = hang_after  # type: ignore[method-assign]
    log = EventLog(log_url)
    engine = ProjectionEngine(LogReader(log), [DocTotals()], {"docs": MongoStore(mongo_url)})
    engine.catch_up()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
