"""``readmodel simulate``, ``verify``, ``reference init`` and ``demo``: the reference
e-commerce system from the command line (the logic lives in ``projections/reference/``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from config import Settings
from workers.cli_support import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    ConfigOption,
    JsonOption,
    err,
    fail,
    guarded,
    load,
    out,
)
from workers.logs import configure_logging

reference_app = typer.Typer(
    help="The reference e-commerce system's service databases.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the reference system's commands to the ``readmodel`` app."""
    app.add_typer(reference_app, name="reference")
    app.command()(simulate)
    app.command()(verify)
    app.command()(demo)


def action_progress(console: Any = None) -> Progress:
    """A progress bar with the rate in actions per second."""
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8} /s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or out,
    )


@reference_app.command("init")
def reference_init(
    config: ConfigOption = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the DDL of each service instead of applying it.")
    ] = False,
) -> None:
    """Create the auth, products and orders services' tables and outbox tables, and the chat
    service's indexes and outbox index when there is one (idempotent).

    The sources must be named auth, products, orders and (optional, MongoDB) chat
    (config/examples/reference.toml).
    """
    from projections.reference.chat_service import NO_CHAT, chat_source, chat_statements
    from projections.reference.provision import init_services, service_sources, service_statements

    settings = load(config, log_level="warning")
    sources = guarded(service_sources, settings)
    chat = guarded(chat_source, settings)
    if print_only:
        for name, source in sources.items():
            print(f"-- service {name}")
            for statement in guarded(service_statements, name, source):
                print(statement.rstrip() + ";\n")
        if chat is None:
            print(f"-- {NO_CHAT}")
        else:
            print("-- service chat (MongoDB, mongosh commands)")
            for command in guarded(chat_statements, chat):
                print(command + ";\n")
        return
    for name, count in guarded(init_services, settings).items():
        if name == "chat":
            out.print(f"chat: {count} indexes ensured; collections and outbox are ready")
        else:
            out.print(f"{name}: {count} statements applied; tables and outbox are ready")
    if chat is None:
        out.print(escape(NO_CHAT), highlight=False)


def simulate(
    config: ConfigOption = None,
    users: Annotated[int, typer.Option("--users", "-u", min=1, help="Users who register.")] = 1000,
    orders: Annotated[int, typer.Option("--orders", "-o", min=0, help="Orders placed.")] = 5000,
    rate: Annotated[
        float | None, typer.Option("--rate", min=0.1, help="At most this many actions per second.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same final service state.")] = 1,
) -> None:
    """Run a reproducible shop workload against the auth, products and orders services.

    Users register, change e-mail or leave; products are created, repriced, restocked and
    reviewed; orders (lines drawn from a Zipf-skewed popularity) are placed, paid, shipped
    or cancelled. Each business action is one transaction writing state and outbox rows.
    Missing tables are created first.
    """
    settings = load(config, log_level="warning")
    result = run_simulation(settings, users, orders, seed=seed, rate=rate)
    out.print(
        f"simulated {result.total_actions} actions, {result.total_events} events "
        f"({', '.join(f'{k} {v}' for k, v in sorted(result.events.items()))}) "
        f"in {result.seconds:.1f}s",
        highlight=False,
    )
    for note in result.notes:
        out.print(escape(note), highlight=False)


def run_simulation(
    settings: Settings, users: int, orders: int, *, seed: int, rate: float | None = None
) -> Any:
    from projections.reference.simulate import Simulator

    with action_progress() as progress:
        task = progress.add_task("services write", total=None, rate="-")

        def advance(done: int, total: int) -> None:
            if done % 50 and done != total:
                return
            elapsed = progress.tasks[0].elapsed or 0
            speed = f"{done / elapsed:,.0f}" if elapsed > 0 else "-"
            progress.update(task, completed=done, total=total, rate=speed)

        simulator = guarded(Simulator, settings, seed=seed, rate=rate, progress=advance)
        return guarded(simulator.run, users, orders)


def verify(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Mismatches shown per projection.")
    ] = 20,
) -> None:
    """Recompute every reference read model from the service databases and compare.

    Prints mismatches by projection and key; exit 1 when there is any, 0 when every read
    model equals what the services hold. Run it once the pipeline has caught up (it warns
    when it has not): a projection still behind shows its lag as mismatches.
    """
    from workers.reference import run_verify

    settings = load(config, log_level="warning")
    report, behind = guarded(run_verify, settings, keep=limit)
    if as_json:
        print(json.dumps({**report.as_dict(), "behind": behind}, indent=2, default=str))
    else:
        print_report(report, limit)
    if behind:
        err.print(f"[yellow]warning:[/] {escape(behind)}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(EXIT_FAILURE)


def print_report(report: Any, limit: int = 20, console: Any = None) -> None:
    """The verify summary table, then the first ``limit`` mismatches of each projection."""
    console = console or out
    summary = Table(title="verify: read models against the services")
    for column in ("projection", "keys checked", "mismatches"):
        summary.add_column(column, justify="left" if column == "projection" else "right")
    for name, result in report.projections.items():
        style = "green" if result.mismatch_count == 0 else "red"
        summary.add_row(name, str(result.checked), f"[{style}]{result.mismatch_count}[/]")
    console.print(summary)
    for note in report.notes:
        console.print(escape(note), highlight=False)
    shown = [m for r in report.projections.values() for m in r.mismatches[:limit]]
    if not shown:
        return
    table = Table(title="mismatches")
    for column in ("projection", "key", "kind", "column: expected -> actual"):
        table.add_column(column)
    for m in shown:
        detail = "; ".join(
            f"{column}: {expected!r} -> {actual!r}"
            for column, (expected, actual) in m.columns.items()
        )
        table.add_row(m.projection, m.key, m.kind, escape(detail[:300]))
    console.print(table)


def demo(
    config: ConfigOption = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the embedded demo keeps its SQLite databases.")
    ] = Path("readmodel-demo"),
    users: Annotated[int, typer.Option("--users", min=1, help="Users who register.")] = 300,
    orders: Annotated[int, typer.Option("--orders", min=1, help="Orders placed.")] = 1000,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Workload seed (default: 42 embedded, random with --config)."),
    ] = None,
) -> None:
    """Run the reference shop end to end: simulate, relay, project, query, verify.

    Without --config nothing needs to run: SQLite service databases and read store, an
    in-process broker and cache, in --dir (recreated). With --config (for example
    config/examples/reference.toml) the same runs against its PostgreSQL, MariaDB, broker
    and Redis cache; its service databases may already hold data of other seeds.
    """
    from workers.demo import run_demo

    configure_logging("warning")
    if config is not None and not config.exists():
        raise fail(f"config file not found: {config}", EXIT_CONFIG)
    code = guarded(
        run_demo, out, config=config, directory=directory, users=users, orders=orders, seed=seed
    )
    raise typer.Exit(code)
