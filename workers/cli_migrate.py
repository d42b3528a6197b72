"""``readmodel migrate``: create and upgrade readmodel's own tables in the read store(s)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from outbox.db import engine_kind, redact_dsn
from outbox.migrate_locks import (
    LOCK_BACKOFF,
    LOCK_RETRIES,
    LOCK_TIMEOUT,
    MAX_LOCK_TIMEOUT,
    check_lock_timeout,
)
from workers.cli_support import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    ConfigOption,
    LogJsonOption,
    LogLevelOption,
    fail,
    guarded,
    load,
    migrate_hint,
    out,
)


def _lock_timeout(value: float) -> float:
    try:
        check_lock_timeout(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def migrate(
    config: ConfigOption = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Change nothing; exit 1 unless every read store is at the latest revision.",
        ),
    ] = False,
    sql: Annotated[
        bool,
        typer.Option(
            "--sql",
            help="Print the DDL from an empty database to the latest revision; "
            "the database is not touched.",
        ),
    ] = False,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            callback=_lock_timeout,
            help="PostgreSQL: seconds to wait for a table lock before rolling back and "
            "retrying (queries of the pipeline queue behind a waiting ALTER); 0 waits "
            f"as long as it takes, whatever the database sets; at most {MAX_LOCK_TIMEOUT}.",
        ),
    ] = LOCK_TIMEOUT,
    lock_retries: Annotated[
        int,
        typer.Option(
            "--lock-retries",
            min=0,
            help="PostgreSQL: how many times to retry after a lock wait timed out (or a "
            "deadlock), waiting --lock-backoff seconds, then twice as long each time; then "
            "fail naming who holds the table.",
        ),
    ] = LOCK_RETRIES,
    lock_backoff: Annotated[
        float,
        typer.Option(
            "--lock-backoff",
            min=0.0,
            help="PostgreSQL: seconds before the first retry after a lock wait gave up.",
        ),
    ] = LOCK_BACKOFF,
    log_json: LogJsonOption = False,
    log_level: LogLevelOption = None,
) -> None:
    """Create or upgrade readmodel's own tables (event log, checkpoints, parked events,
    invalidations) in every configured read store, to the revision this readmodel needs.

    Run it after installing a new readmodel and before starting relay, work, sweeper or
    run: they refuse a read store that is not at this revision. Several processes may run
    it at once. On PostgreSQL a table lock held by another transaction is waited for
    --lock-timeout seconds at a time, --lock-retries times (--lock-backoff seconds apart,
    doubling), then migrate fails (exit 1)
    naming the table and the sessions holding it. A read store made by a release without
    migrations is adopted (its
    columns are checked, then it is stamped). The read models' own tables are created by
    the workers, not here.
    """
    from outbox.errors import SchemaOutdated
    from outbox.log_rules import unrecorded_sources
    from outbox.migrate import (
        current,
        engine_for,
        head,
        is_newer,
        offline_sql,
        store_urls,
        upgrade,
    )

    if check and sql:
        raise fail("--check and --sql do not go together", EXIT_CONFIG)
    settings = load(config, log_json, log_level)
    stores = store_urls(settings)
    target = head()
    if sql:
        for name, url in stores.items():
            print(f"-- read store {name!r} ({engine_kind(url)}): to revision {target}\n")
            print(offline_sql(engine_kind(url)))
        return
    for name, url in stores.items():
        where = redact_dsn(url, location=True)  # as logged: no user, password or query
        label = f"{name} ({where})"
        store = settings.store_label(name)
        with engine_for(url) as engine:
            if check:
                revision = guarded(current, engine, store=store)
                if revision != target:
                    newer = is_newer(revision)
                    outdated = SchemaOutdated(where, revision, target, newer=newer, store=store)
                    raise fail(outdated.remedy(migrate_hint(config)), EXIT_FAILURE)
                out.print(f"{label}: at revision {target}", highlight=False, soft_wrap=True)
                continue
            result = guarded(
                upgrade,
                engine,
                lock_timeout=lock_timeout,
                lock_retries=lock_retries,
                retry_backoff=lock_backoff,
                store=store,
            )
            migrated = result.before != result.after
            unrecorded = guarded(unrecorded_sources, engine) if migrated else []
        if result.before == result.after:
            out.print(f"{label}: already at revision {target}", highlight=False, soft_wrap=True)
        else:
            adopted = " (adopted tables created without migrations)" if result.adopted else ""
            out.print(
                f"{label}: migrated from revision {result.before or 'none'} to {result.after}"
                + adopted,
                highlight=False,
                soft_wrap=True,
            )
        if unrecorded:
            out.print(_unrecorded_note(unrecorded, config), highlight=False, soft_wrap=True)


def _unrecorded_note(sources: list[str], config: Path | None) -> str:
    """What an upgrade to recorded ``binary_ids`` rules means for a log holding events."""
    option = f" --config {config}" if config is not None else ""
    return (
        f"note: the event log holds events of {', '.join(sources)} from before readmodel "
        f"recorded each source's binary_ids rule: the first relay of each source will record "
        f"its binary_ids setting as the rule, and relays with another are refused from then "
        f"on. If a source's events were relayed with another binary_ids than its config has "
        f"now, record the rule they were relayed with before relaying, with a config that has "
        f"it: readmodel outbox binary-ids SOURCE RULE{option}"
    )
