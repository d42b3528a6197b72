"""An idle relay waits longer and longer between claims, up to ``poll_max``, whatever
``poll_min`` is."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from config import Settings
from outbox.log import EventLog
from outbox.relay import SourceRelay
from outbox.sources import open_source
from tests.outbox_helpers import init_outbox


@pytest.mark.parametrize(("poll_min", "first"), [("0ms", 0.001), ("5ms", 0.01)])
def test_an_idle_relay_backs_off_up_to_poll_max(
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    poll_min: str,
    first: float,
) -> None:
    """With ``poll_min = "0ms"`` (claim again at once while busy) the idle wait doubled from
    0 and stayed 0: an idle relay claimed from its database without pause, for ever."""
    url = sqlite_database()
    settings = make_settings(
        sqlite_database(), {"svc": {"url": url, "poll_min": poll_min, "poll_max": "1s"}}
    )
    init_outbox(settings.sources["svc"])
    log = EventLog(settings.store.url)
    log.create_tables()
    source = open_source("svc", settings.sources["svc"])
    stop = threading.Event()
    waits: list[float] = []

    def wait(timeout: float, _stop: threading.Event) -> None:  # records, does not sleep
        waits.append(timeout)
        if len(waits) == 12:
            stop.set()

    source.wait = wait  # type: ignore[method-assign]
    try:
        SourceRelay(source, log, settings.relay).run(stop)
        assert waits[:3] == [first, first * 2, first * 4]
        assert waits[-1] == 1.0 and waits == sorted(waits)
    finally:
        source.close()
        log.close()
