"""A :class:`PayloadError`'s message (a parked event's reason) shows no key of a mapping
(``dict[str, Any]``, ``dict[str, int]``...) nor an undeclared field's name: those are the
payload's data, shown as ``*``; nor any value at or inside a mapping or an undeclared
field. It keeps the declared fields' names and pydantic's error type."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from projections.payload_errors import PayloadError, payload_error

SECRET = "hunter2-secret"
KEY = "alice@example.com"


class Login(BaseModel):
    pw: str


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    attrs: dict[str, Any] = {}
    counts: dict[str, int] = {}
    logins: dict[str, Login] = {}
    either: Login | dict[str, int] | None = None
    lines: list[Login] = []


def _error(payload: dict[str, Any]) -> PayloadError:
    with pytest.raises(ValidationError) as rejected:
        Profile.model_validate(payload)
    return payload_error("Profiled", Profile, rejected.value)


@pytest.mark.parametrize(
    ("payload", "shown"),
    [
        (
            {"name": "n", "attrs": SECRET},
            "attrs: Input should be a valid dictionary (value hidden)",
        ),
        ({"name": "n", "counts": {KEY: SECRET}}, "counts.*: Input should be a valid integer"),
        ({"name": "n", "logins": {KEY: {"pw": [SECRET]}}}, "logins.*.pw: Input should be"),
        ({"name": "n", "logins": {KEY: {}}}, "logins.*.pw: Field required"),
        ({"name": "n", "either": {KEY: SECRET}}, "either.*.*: Input should be a valid integer"),
        ({"name": "n", KEY: SECRET}, "*: Extra inputs are not permitted (value hidden)"),
    ],
)
def test_no_key_of_a_mapping_nor_its_value_is_shown(payload: dict[str, Any], shown: str) -> None:
    error = _error(payload)
    message = str(error)
    assert shown in message, message
    assert SECRET not in message and KEY not in message and "alice" not in message, message


def test_declared_fields_and_their_values_are_still_shown_beside() -> None:
    error = _error({"name": 5, "lines": [{"pw": 7}], "counts": {KEY: SECRET}})
    message = str(error)
    assert "name: Input should be a valid string (got 5)" in message, message
    assert "lines.0.pw: Input should be a valid string (got 7)" in message, message
    assert KEY not in message and SECRET not in message, message
    assert error.fields == ("name", f"counts.{KEY}", "lines.0.pw")  # whole, for code
