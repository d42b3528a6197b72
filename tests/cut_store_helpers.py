"""A ``doc_totals`` deployment whose MongoDB store is reached through a :class:`CutProxy` (or
a subclass, such as :class:`tests.mongo_commit_cut_helpers.MongoCommitCutProxy`), so a test
can make the store go away in the middle of a CLI command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from config import load_settings
from tests.cli_helpers import DOC_TOTALS, run_cli, write_config
from tests.outbox_helpers import init_outbox
from tests.stall_proxy_helpers import CutProxy

P = TypeVar("P", bound=CutProxy)


def doc_totals_behind_a_cut(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    mongo_url: str,
    proxy_class: Callable[[tuple[str, int]], P] = CutProxy,  # type: ignore[assignment]
) -> tuple[Path, P, str]:
    """A migrated config (``doc_totals`` in MongoDB through the proxy, ``max_attempts`` 1,
    a SQLite log and ``bank`` source), the proxy (a ``proxy_class``), and the source's
    URL."""
    host, port = mongo_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = proxy_class((host, int(port)))
    data: dict[str, Any] = {
        "projections": [DOC_TOTALS],
        "store": {"url": sqlite_database()},
        "stores": {
            "docs": {
                "url": mongo_url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
                + "&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000"
            }
        },
        "engine": {"max_attempts": 1},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    config = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    migrated = run_cli(["migrate", "--config", str(config)])
    assert migrated.exit_code == 0, migrated.output
    return config, proxy, data["sources"]["bank"]["url"]
