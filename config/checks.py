"""Checks of settings values shared by the settings models: durations, SQL identifiers,
DSNs and MongoDB URLs (decrypted when written ``fernet:...``, refused without echoing them),
and ``_Strict``, the models' base (unknown keys are errors, values are frozen)."""

from __future__ import annotations

import math
import re
import threading
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from sqlalchemy.engine import make_url

from config.mysql_options import check_mysql_options
from config.secrets import reveal

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")  # fullmatch: "$" took "x\n"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> Any:
    """Accept ``90``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` or ``"250ms"``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("expected a duration such as 30s, 15m, 12h or 7d")
        return _bounded(float(match.group(1)) * _UNITS[match.group(2)])
    if isinstance(value, bool) or (isinstance(value, int | float) and value < 0):
        raise ValueError("expected a duration such as 30s, 15m, 12h or 7d (seconds if a number)")
    if isinstance(value, int | float):
        return _bounded(value)
    return value


_LONGEST = threading.TIMEOUT_MAX  # seconds a process can wait for (about 292 years)


def _bounded(seconds: float) -> timedelta:
    """``seconds`` as a duration; refused when not a number or longer than a wait can be
    (a timedelta or a thread's wait would raise where the duration is used)."""
    if math.isnan(seconds):
        raise ValueError("expected a duration such as 30s, 15m, 12h or 7d (seconds if a number)")
    if seconds > _LONGEST:
        raise ValueError(f"the duration is too long (at most {int(_LONGEST // 86400)}d)")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

OFF = "off"


def parse_bound(value: Any) -> Any:
    """A duration, or ``"off"`` (any case) for none: TOML has no null to unset a default."""
    if isinstance(value, str) and value.strip().lower() == OFF:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(
            'expected a duration such as 30s, 15m, 12h or 7d (seconds if a number), or "off"'
        ) from None


DurationOrOff = Annotated[timedelta | None, BeforeValidator(parse_bound)]
"""A bound that can be turned off: ``None`` when written ``"off"``."""

_LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level_lowered(value: Any) -> Any:
    """A log level in any case (``DEBUG``, ``Info``), as ``--log-level`` takes it; anything
    else is left as given, so that the refusal shows what was written."""
    if isinstance(value, str) and value.lower() in _LOG_LEVELS:
        return value.lower()
    return value


LogLevel = Annotated[
    Literal["debug", "info", "warning", "error"], BeforeValidator(_log_level_lowered)
]


def at_least(minimum: str, why: str) -> AfterValidator:
    """A duration refused when shorter than ``minimum`` (``"100ms"``): ``why`` says what a
    shorter one would do (a loop that spins)."""
    floor: timedelta = parse_duration(minimum)

    def check(value: timedelta | None) -> timedelta | None:
        if value is not None and value < floor:  # None: a bound turned "off"
            raise ValueError(f"must be at least {minimum}: {why}")
        return value

    return AfterValidator(check)


def check_identifier(value: str) -> str:
    """A SQL identifier from config: letters, digits, ``_``, ``$``. Quoted later, never pasted."""
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid SQL identifier "
            "(letters, digits and _ only, starting with a letter or _, at most 63 characters)"
        )
    return value


def _dsn_checked(value: str, schemes: set[str], expected: str) -> str:
    """``value`` (decrypted when written ``fernet:...``, see :mod:`config.secrets`) with its
    scheme in lower case, refused (without echoing it: it may hold a password) unless
    SQLAlchemy can read it: scheme, driver, port."""
    value = reveal(value)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() not in schemes:
        raise ValueError(f"expected a DSN starting with {expected}")
    value = f"{scheme.lower()}://{rest}"
    _authority_checked(value)
    try:  # postgres:// (Heroku's DATABASE_URL) is readmodel's, not a SQLAlchemy dialect name
        url = make_url(re.sub(r"^postgres(?=[+:])", "postgresql", value))
        port = url.port
        url.get_dialect()
    except ValueError:
        raise ValueError("the port is not a number") from None
    except Exception:
        raise ValueError(
            f"not a DSN readmodel can read (the driver after '+' is unknown, or the host or "
            f"escaping is wrong); expected {expected}"
        ) from None
    if port is not None and not 0 < port < 65536:
        raise ValueError("the port is out of range")
    check_mysql_options(url)
    return value


def _url_checked(value: str, schemes: set[str], expected: str) -> str:
    """A MongoDB URL (:func:`_mongo_url_checked`) or a DSN of ``schemes``."""
    if reveal(value).lower().startswith(("mongodb://", "mongodb+srv://")):
        return _mongo_url_checked(value)
    return _dsn_checked(value, schemes, expected)


def _mongo_url_checked(value: str) -> str:
    """A MongoDB URL (decrypted), scheme in lower case, that names its database and that the
    driver can read (hosts, ports, options; a ``+srv`` URL is not looked up here)."""
    from urllib.parse import unquote

    from pymongo.errors import PyMongoError
    from pymongo.uri_parser import parse_uri

    value = reveal(value)
    scheme, _, rest = value.partition("://")
    scheme = scheme.lower()
    value = f"{scheme}://{rest}"
    _authority_checked(value)
    authority, slash, path = rest.partition("/")
    database = unquote(path.split("?", 1)[0])
    hosts = authority.rpartition("@")[2]
    if not hosts:
        raise ValueError("the MongoDB URL names no host: mongodb://host:27017/<database>")
    if not slash or not database:
        raise ValueError("the MongoDB URL names no database: mongodb://host:27017/<database>")
    if any(c in database for c in '/\\. "$') or len(database) > 63:
        raise ValueError(f"{database!r} is not a valid MongoDB database name")
    if scheme == "mongodb+srv":
        if "," in hosts or ":" in hosts:
            raise ValueError("a mongodb+srv:// URL names one host name, without a port")
        return value
    try:
        parse_uri(value)
    except (PyMongoError, ValueError) as exc:
        reason = str(exc).split(", full error")[0]
        secret = authority.rpartition("@")[0].partition(":")[2]
        if secret:
            reason = reason.replace(secret, "***")
        raise ValueError(f"not a MongoDB URL the driver can read: {reason}") from None
    return value


def _authority_checked(value: str) -> str:
    """``value``, refused when its user or password has an unescaped ``@``, ``/`` or space:
    the DSN would be read with part of the password as the host or the path, and masking
    (which finds the password between ``:`` and ``@``) would show it."""
    rest = value.split("://", 1)[1] if "://" in value else ""
    authority = rest.split("/", 1)[0]
    if authority.count("@") > 1:
        raise ValueError("the user or password contains '@': write it as %40")
    sqlite = value.lower().startswith("sqlite")  # a path, which may hold any character
    if not sqlite and "@" not in authority and "@" in rest.split("?", 1)[0]:
        raise ValueError("the user or password contains '/': write it as %2F")
    if any(c.isspace() for c in authority.rpartition("@")[0]):
        raise ValueError("the user or password contains a space: write it as %20")
    return value


def _port_checked(value: str) -> str:
    """``value`` (a broker or cache URL), refused (without echoing it) when its port is not a
    number or out of range: the client would raise at connect time, a traceback in ``relay``
    and ``work`` and "broker unreachable" in ``status``, naming neither the key nor the file."""
    from urllib.parse import urlsplit

    try:
        port = urlsplit(value).port
    except ValueError as exc:
        if "out of range" in str(exc):
            raise ValueError("the port is out of range") from None
        if "Port" in str(exc):
            raise ValueError("the port is not a number") from None
        raise ValueError("not a URL readmodel can read (the host or escaping is wrong)") from None
    if port is not None and not 0 < port < 65536:
        raise ValueError("the port is out of range")
    return value


def _client_url_checked(value: str) -> str:
    """A broker or cache URL (checked by :func:`_port_checked`), refused when its client
    cannot read it: a query parameter it does not know or a value it cannot take
    (``?socket_timeout=ten``), which raised only when ``relay`` or ``work`` built it."""
    from urllib.parse import parse_qsl, urlsplit

    value = _port_checked(value)
    scheme = value.split("://", 1)[0].lower()
    try:
        if scheme in ("redis", "rediss", "unix"):
            import redis

            # Builds the connection object, no I/O: a parameter it does not take raises here.
            redis.ConnectionPool.from_url(value).make_connection()
        elif scheme in ("amqp", "amqps") and "ssl_options=" not in value:  # that one reads files
            import pika

            pika.URLParameters(value)
    except (ValueError, TypeError) as exc:
        reason = str(exc)
        unknown = re.search(r"unexpected keyword argument '([^']+)'", reason)
        if unknown:
            reason = f"unknown URL parameter {unknown.group(1)!r}"
        parts = urlsplit(value)
        secrets = [parts.password or ""] + [v for k, v in parse_qsl(parts.query) if "pass" in k]
        for secret in filter(None, secrets):
            reason = reason.replace(secret, "***")
        raise ValueError(f"not a URL its client can read: {reason}") from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
