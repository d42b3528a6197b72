"""The tests' MongoDB-wire server stays usable after a test whose process was killed
inside a transaction: its databases are dropped without wedging the server (on a server of
this test's own, so that a regression cannot wedge the session's)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from pymongo import MongoClient

from tests.mongo_helpers import drop_databases, secantus_server

CHILD = """
import sys
from pymongo import MongoClient
client = MongoClient(sys.argv[1], directConnection=True)
client.held.docs.insert_one({"_id": 1})
session = client.start_session()
session.start_transaction()
client.held.docs.update_one({"_id": 1}, {"$set": {"v": 1}}, session=session)
print("open", flush=True)
sys.stdin.read()
"""


def test_dropping_a_database_behind_a_killed_transaction_leaves_the_server_usable() -> None:
    with secantus_server() as url:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == b"open\n"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()
        drop_databases(url, ["held"], own_server=True)
        client: MongoClient[dict[str, Any]] = MongoClient(
            url, directConnection=True, timeoutMS=5_000
        )
        try:
            started = time.monotonic()
            client.other.docs.insert_one({"_id": 1})
            assert time.monotonic() - started < 5
            assert "held" not in client.list_database_names()
        finally:
            client.close()
