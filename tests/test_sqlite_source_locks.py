"""An SQLite outbox source holds the database's write lock only to read a batch and to
acknowledge it, not while the batch is appended to the event log."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

import pytest
import sqlalchemy as sa

from config import Settings
from outbox.db import create_engine
from outbox.log import AppendResult, EventLog
from outbox.relay import Relay
from outbox.rows import LogRecord, MalformedRow
from tests.outbox_helpers import init_outbox, insert_events


def _events(first: int, count: int) -> list[tuple[str, str, str, dict[str, int]]]:
    return [("order", f"o{n % 3}", "OrderPlaced", {"n": n}) for n in range(first, first + count)]


@pytest.mark.parametrize("on_dispatch", ["delete", "mark"])
def test_a_read_store_in_the_sources_own_file_is_appended_to(
    sqlite_database: Callable[[], str], make_settings: Callable[..., Settings], on_dispatch: str
) -> None:
    """One SQLite file for the service's outbox and the read store: the relay's claim held
    the file's write lock, so its own append waited the busy timeout and failed ("database
    is locked"), batch after batch: nothing was ever relayed."""
    url = sqlite_database()
    settings = make_settings(url, {"svc": {"url": url, "on_dispatch": on_dispatch}})
    init_outbox(settings.sources["svc"])
    db = create_engine(url)
    relay = Relay(settings)
    try:
        insert_events(db, _events(1, 5))
        totals = relay.drain()["svc"]
        assert (totals.errors, totals.relayed) == ([], 5)
        assert [e.payload["n"] for e in relay.log.read("svc")] == [1, 2, 3, 4, 5]
        where = " WHERE dispatched_at IS NULL" if on_dispatch == "mark" else ""
        with db.connect() as conn:
            assert conn.exec_driver_sql(f"SELECT count(*) FROM outbox{where}").scalar() == 0
    finally:
        relay.close()
        db.dispose()


class _ServiceWritesDuringAppend(EventLog):
    """An event log that, while appending its first batch, lets the service insert a row
    with no busy wait (as a service with a short busy timeout would), recording what SQLite
    said."""

    def __init__(self, url: str, outbox_path: str) -> None:
        super().__init__(url)
        self.outbox_path = outbox_path
        self.service_errors: list[str] = []
        self.service_wrote = False

    def append(
        self,
        source: str,
        records: Sequence[LogRecord],
        malformed: Sequence[MalformedRow] = (),
        *,
        binary_ids: str | None = None,
    ) -> AppendResult:
        if not self.service_wrote:
            self.service_wrote = True
            self._service_insert()
        return super().append(source, records, malformed, binary_ids=binary_ids)

    def _service_insert(self) -> None:
        service = sqlite3.connect(self.outbox_path, timeout=0)
        try:
            with service:
                service.execute(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                    "VALUES ('order', 'late', 'OrderPlaced', '{\"n\": 0}')"
                )
        except sqlite3.OperationalError as exc:
            self.service_errors.append(str(exc))
        finally:
            service.close()


def test_the_service_writes_its_outbox_while_the_relay_appends_a_batch(
    sqlite_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    """The service's own writes failed ("database is locked") while the relay appended a
    batch to the log: the claim's write lock was held until the acknowledgement."""
    url = sqlite_database()
    settings = make_settings(sqlite_database(), {"svc": {"url": url, "batch_size": 2}})
    init_outbox(settings.sources["svc"])
    db = create_engine(url)
    log = _ServiceWritesDuringAppend(settings.store.url, sa.make_url(url).database or "")
    relay = Relay(settings, log=log)
    try:
        insert_events(db, _events(1, 3))
        totals = relay.drain()["svc"]
        assert log.service_errors == []
        assert totals.errors == []
        payloads = [e.payload["n"] for e in relay.log.read("svc")]
        assert payloads == [1, 2, 3, 0]
        with db.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar() == 0
    finally:
        relay.close()
        db.dispose()
