"""structlog setup: console for people, JSON for machines; secrets are masked in every event."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from outbox.db import redact_text


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and _may_hold_secret(value):
            event[key] = redact_text(value)
    return event


def _may_hold_secret(text: str) -> bool:
    lower = text.lower()
    return "://" in text or "password" in lower or "user " in lower or "role " in lower


LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str = "info", json_output: bool = False) -> None:
    """Configure structlog (and the standard library's logging, which Dramatiq uses)."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level {level!r}: expected {', '.join(LEVELS)}")
    numeric = getattr(logging, level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks are made text before the secrets are masked, in both modes: the console
    # renderer would otherwise draw them itself after masking, with each frame's local
    # variables (rich's default), which hold DSNs and passwords.
    masking: list[Any] = [structlog.processors.format_exc_info, _redact]
    renderer: Any
    if json_output:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*processors, *masking, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(
        [*processors, structlog.stdlib.add_logger_name],
        [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *masking, renderer],
        max(numeric, logging.WARNING),
    )
    # pika logs every failed connection attempt with a traceback; readmodel reports the
    # error itself (status, health, the worker's retries), so pika speaks only in debug.
    pika_level = logging.DEBUG if numeric <= logging.DEBUG else logging.CRITICAL
    logging.getLogger("pika").setLevel(pika_level)


def _route_standard_logging(pre_chain: list[Any], processors: list[Any], level: int) -> None:
    """Send the standard library's records (Dramatiq, pika, SQLAlchemy, pymongo) through the
    same masking and renderer: one format on stderr, JSON lines in production."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=pre_chain, processors=processors)
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
