"""The record of handlers past ``engine.handler_timeout`` in the broker's Redis
(``workers/overdue_board.py``), on a real Redis under a namespace of the test's own: what
``status`` reads is what the live workers hold, each handler counted once, the oldest's age
on Redis's clock, a gone worker's fields neither counted nor kept."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from config import BrokerSettings
from tests.broker_helpers import REDIS_URL, delete_redis_keys, wait_until
from workers import overdue_board
from workers.overdue_board import OverdueBoard, board_key, overdue_handlers


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[BrokerSettings]:
    monkeypatch.setattr(overdue_board, "REFRESH", 0.2)
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    yield BrokerSettings(url=REDIS_URL, queue=name, namespace=name)
    delete_redis_keys(REDIS_URL, f"{name}:*")


def _read(settings: BrokerSettings) -> dict[str, tuple[int, float]]:
    found = overdue_handlers(settings, timeout=2)
    return {name: (o.handlers, o.oldest_seconds) for name, o in found.items()}


def test_each_handler_counts_once_until_it_comes_back(settings: BrokerSettings) -> None:
    first, second = OverdueBoard(settings), OverdueBoard(settings)  # two worker processes
    try:
        first.handler_overdue("totals", 1)
        time.sleep(1.2)
        first.handler_overdue("totals", 2)
        second.handler_overdue("totals", 1)  # the same thread ident in another process
        second.handler_overdue("inbox", 3)
        assert wait_until(lambda: _read(settings).get("totals", (0, 0))[0] == 3, 5)
        assert wait_until(lambda: "inbox" in _read(settings), 5)
        assert _read(settings)["totals"][1] >= 1.0  # the oldest: first's thread 1

        time.sleep(0.5)  # refreshed meanwhile: still one field per handler
        assert _read(settings)["totals"][0] == 3

        first.handler_back("totals", 1)
        second.handler_back("inbox", 3)
        assert wait_until(lambda: _read(settings).get("totals", (0, 0))[0] == 2, 5)
        assert "inbox" not in _read(settings)
        assert _read(settings)["totals"][1] < 1.0  # the oldest left now is younger
    finally:
        first.close()
        second.close()
    assert _read(settings) == {}  # a clean stop takes its fields with it


def test_a_gone_workers_fields_are_neither_counted_nor_kept(settings: BrokerSettings) -> None:
    client = redis.Redis.from_url(settings.url)
    key = board_key(settings.namespace)
    now = float(client.time()[0])
    gone = now - overdue_board.STALE - 1
    client.hset(key, "gone.1", f"{gone - 60:.3f} {gone:.3f} totals")
    assert _read(settings) == {}

    board = OverdueBoard(settings)
    try:
        board.handler_overdue("totals", 1)
        assert wait_until(lambda: _read(settings).get("totals", (0, 0))[0] == 1, 5)
        assert client.hexists(key, "gone.1") is False  # dropped by the live worker's write
        assert 0 < client.ttl(key) <= overdue_board.STALE * 4
    finally:
        board.close()
        client.close()
