"""The tests' MongoDB-wire server stays usable after a test whose process was killed
inside a transaction: its databases are dropped without wedging the server (on a server of
this test's own, so that a regression cannot wedge the session's)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
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


SESSION = """
import os, sys
sys.path.insert(0, os.getcwd())
from tests.mongo_helpers import secantus_server
with secantus_server() as url:
    print(url, flush=True)
    sys.stdin.read()
"""


def test_a_session_killed_outright_takes_its_server_with_it() -> None:
    """A test session SIGKILLed (a CI timeout) leaves no server running behind it (its
    files stay: removed here)."""
    session = subprocess.Popen(
        [sys.executable, "-c", SESSION], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    server: tuple[int, Path] | None = None
    try:
        assert session.stdout is not None
        url = session.stdout.readline().decode().strip()
        port = url.rsplit(":", 1)[1]
        server = _server_on(port)
        assert server is not None, f"no server found on port {port}"
        session.send_signal(signal.SIGKILL)
        session.wait()
        deadline = time.monotonic() + 15
        while _server_on(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _server_on(port) is None, f"the server on port {port} outlived its session"
    finally:
        session.kill()
        session.wait()
        for pipe in (session.stdin, session.stdout):
            if pipe is not None:
                pipe.close()
        if server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server[0], signal.SIGKILL)
            shutil.rmtree(server[1], ignore_errors=True)


def _server_on(port: str) -> tuple[int, Path] | None:
    """``(pid, directory)`` of the running server on ``port``, or ``None``."""
    listing = subprocess.run(
        ["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True, check=True
    )
    for line in listing.stdout.splitlines():
        pid, *words = line.split()
        if "--port" in words and words[words.index("--port") + 1] == port:
            if "--storage-path" in words and any("secantusd" in w for w in words):
                return int(pid), Path(words[words.index("--storage-path") + 1]).parent
    return None
