"""Run as a subprocess by tests/test_document_replay_stalls.py: rebuild DocTotals and hang
inside the swap's transaction, once it has written every lane's checkpoint and moved the
generation (it prints ``swapping``), to be SIGKILLed there.

    python -m tests.document_swap_kill_child LOG_URL MONGO_URL [LEASE_SECONDS]

With ``LEASE_SECONDS`` its replay lease lasts that long (it expires soon after the kill)
instead of the default (``DocumentReplayer(lease=...)``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from outbox.log import EventLog
from projections.document_replay import DocumentReplayer
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.replay_lock import LEASE_SECONDS
from projections.replay_types import ReplayOptions
from tests.document_fixtures import DocTotals


def main(log_url: str, mongo_url: str, lease: float = LEASE_SECONDS) -> None:
    def hang(self: DocumentReplayer, session: Any) -> int:
        print("swapping", flush=True)
        time.sleep(600)
        return 0

    DocumentReplayer._settle_parked = hang  # type: ignore[method-assign]
    replayer = DocumentReplayer(
        LogReader(EventLog(log_url)), DocTotals(), MongoStore(mongo_url), lease=lease
    )
    replayer.run(ReplayOptions())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(float(a) for a in sys.argv[3:4]))
