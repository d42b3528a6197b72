"""The tags a SQL store's batch invalidates in a PostgreSQL session out of UTC: each tag
whose id is a timestamp also as that session stores it (tests/test_cache_key_spellings.py
shows the reads this keeps fresh, against the server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from projections.session_zone_tags import session_key, with_session_spellings

_BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("tag", "added"),
    [
        ("moment:2024-05-02T10:00:00Z", "moment:2024-05-02T12:00:00"),
        ("moment:2024-05-01T12:00:00+02:00", "moment:2024-05-01T12:00:00"),
        ("moment:2024-05-03T10:00:00", "moment:2024-05-03T10:00:00+02:00"),
        ("pos:acme:day:2024-01-03T10:00:00", "pos:acme:day:2024-01-03T10:00:00+01:00"),
        ("moment:2024-10-27T01:30:00+00:00", "moment:2024-10-27T02:30:00"),
        ("moment:2024-10-27T02:30:00", "moment:2024-10-27T02:30:00+01:00"),  # the later
        ("moment:2024-03-31T02:30:00", "moment:2024-03-31T03:30:00+02:00"),  # never happens
    ],
)
def test_a_timestamp_tag_is_also_spelled_as_the_session_stores_it(tag: str, added: str) -> None:
    assert with_session_spellings({tag}, _BERLIN) == {tag, added}


@pytest.mark.parametrize(
    "tag", ["order:20240501", "price:1e-5", "clock:10:00", "user:u-2024-05-01", "product:42"]
)
def test_other_tags_are_as_given(tag: str) -> None:
    assert with_session_spellings({tag}, _BERLIN) == {tag}


@pytest.mark.parametrize("zone", [UTC, ZoneInfo("UTC"), ZoneInfo("Etc/UTC"), None])
def test_a_session_in_utc_changes_nothing(zone: object) -> None:
    tags = {"moment:2024-05-02T10:00:00Z", "moment:2024-05-03T10:00:00"}
    assert with_session_spellings(tags, zone) is tags  # type: ignore[arg-type]


def test_a_fixed_offset_session_is_spelled_too() -> None:
    spelled = with_session_spellings({"moment:2024-05-02T10:00:00Z"}, timezone(timedelta(hours=-7)))
    assert spelled == {"moment:2024-05-02T10:00:00Z", "moment:2024-05-02T03:00:00"}


def test_a_key_is_read_as_the_session_stores_it() -> None:
    naive = sa.Column("at", sa.DateTime)
    aware = sa.Column("at", sa.DateTime(timezone=True))
    noon_utc = datetime(2024, 5, 2, 10, tzinfo=UTC)
    assert session_key(naive, noon_utc, _BERLIN) == datetime(2024, 5, 2, 12)
    assert session_key(aware, datetime(2024, 5, 2, 12), _BERLIN) == noon_utc
    assert session_key(naive, datetime(2024, 5, 2, 12), _BERLIN) == datetime(2024, 5, 2, 12)
    assert session_key(aware, noon_utc, _BERLIN) is noon_utc
    assert session_key(naive, noon_utc, ZoneInfo("UTC")) is noon_utc
    assert session_key(sa.Column("at", sa.Text), noon_utc, _BERLIN) is noon_utc
