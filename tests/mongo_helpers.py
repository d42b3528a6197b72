"""A real MongoDB-wire server for the test session (SecantusDB from PyPI, on a free port),
and a fresh database per test, dropped after."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

MONGO_URL = os.environ.get("READMODEL_TEST_MONGO")
"""A MongoDB server to use instead of starting one, e.g. ``mongodb://127.0.0.1:27017``."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, server: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    deadline = time.monotonic() + 30
    client: MongoClient[dict[str, object]] = MongoClient(
        url, serverSelectionTimeoutMS=500, directConnection=True
    )
    try:
        while True:
            try:
                client.admin.command("ping")
                return
            except Exception:
                if server is not None and server.poll() is not None:
                    text = log.read_text() if log else ""
                    raise RuntimeError(f"the MongoDB-wire test server exited:\n{text}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no MongoDB-wire server answered at {url}") from None
                time.sleep(0.1)
    finally:
        client.close()


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[str]:
    """``mongodb://127.0.0.1:<port>``: a SecantusDB server started for this session (stopped
    and its files removed after), or ``READMODEL_TEST_MONGO``."""
    if MONGO_URL:
        _wait_for(MONGO_URL, None, None)
        yield MONGO_URL.rstrip("/")
        return
    with secantus_server() as url:
        yield url


@contextmanager
def secantus_server() -> Iterator[str]:
    """A SecantusDB server on a free port, stopped and its files removed on exit."""
    home = Path(tempfile.mkdtemp(prefix="rm_test_mongo_"))
    port = _free_port()
    log = home / "server.log"
    binary = Path(sys.executable).with_name("secantusd-py")
    with log.open("wb") as out:
        server = subprocess.Popen(
            _dying_with_this_process(
                [str(binary), "--host", "127.0.0.1", "--port", str(port)]
                + ["--storage-path", str(home / "data"), "--log-level", "WARNING"]
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"mongodb://127.0.0.1:{port}"
    try:
        _wait_for(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(home, ignore_errors=True)


def _dying_with_this_process(command: list[str]) -> list[str]:
    """``command`` through util-linux's ``setpriv --pdeathsig KILL`` where there is one: a
    test session killed outright (SIGKILL, a CI timeout) takes its server with it, instead
    of leaving it running with its files. KILL, not TERM: SecantusDB stops on SIGTERM from
    its main thread, which under load outlived the session by more than 15 s; nothing of
    the server is kept after its session. The signal follows the thread that started it:
    start servers from the main thread."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", *command] if setpriv else command


@pytest.fixture
def mongo_database(mongo_server: str) -> Iterator[Callable[[], str]]:
    """Factory: a fresh MongoDB database per call; returns its URL. All are dropped after."""
    created: list[str] = []

    def make() -> str:
        name = f"rm_test_{uuid.uuid4().hex[:12]}"
        created.append(name)
        return f"{mongo_server}/{name}?directConnection=true"

    yield make
    drop_databases(mongo_server, created, own_server=not MONGO_URL)


def drop_databases(server: str, names: list[str], *, own_server: bool) -> None:
    """Drop a test's databases. On the session's own server, every session is killed first:
    a drop behind a transaction that a killed process left open would otherwise wedge
    SecantusDB for every later test (tests run one at a time, so no other test's session
    is open). A drop that still times out is left to the end of the session."""
    client: MongoClient[dict[str, object]] = MongoClient(
        server, directConnection=True, timeoutMS=10_000
    )
    try:
        if own_server:
            try:
                client.admin.command("killAllSessions", [])
            except PyMongoError:
                pass
        for name in names:
            try:
                client.drop_database(name)
            except PyMongoError:
                pass
    finally:
        client.close()
