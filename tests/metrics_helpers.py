"""Shared pieces of the metrics and clock tests: the figures ``readmodel metrics`` would
export for a config, a ``readmodel metrics`` server run as a subprocess on a free port and
scraped, and a PostgreSQL database whose ``now()`` runs off this host's clock."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from workers.metrics import PipelineCollector
from workers.runtime import build_runtime


def collected(config: Path) -> list[Any]:
    """The metric families a collector reads for ``config`` (one collection)."""
    runtime = build_runtime(load_settings(config), create_tables=False, migrate=False)
    try:
        return list(PipelineCollector(runtime, timeout=10).collect())
    finally:
        runtime.close()


def skew_database_clock(url: str, offset: str) -> None:
    """Make the database's ``now()`` run ``offset`` (an interval) from this host's clock: a
    ``public.now()`` found before ``pg_catalog``'s on the database's search path."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql STABLE "
                    f"AS $$ SELECT pg_catalog.now() + interval '{offset}' $$"
                )
            )
            name = conn.execute(sa.text("SELECT current_database()")).scalar_one()
            conn.execute(sa.text(f'ALTER DATABASE "{name}" SET search_path = public, pg_catalog'))
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """``{'name{labels}': value}`` from /metrics, or {} while the server is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def start_metrics(config: Path, port: int, *args: str) -> subprocess.Popen[str]:
    """``readmodel metrics`` serving ``config`` on ``port`` (``args`` added), as a process."""
    command = [sys.executable, "-m", "workers.cli", "metrics", "--port", str(port), *args]
    return subprocess.Popen(
        [*command, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )


def stop_metrics(process: subprocess.Popen[str]) -> str:
    """Stop the server (SIGTERM, SIGKILL after 30 s); its stderr."""
    if process.poll() is None:
        process.terminate()
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return stderr
