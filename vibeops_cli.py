"""`vibeops`: what an operator does by hand on one machine.

vibeops up               the main job on embedded defaults (server, MySQL, sample data,
                         backup-mysql into two local regions, a restore drill)
vibeops setup-blocks     register block types and save the embedded default blocks
vibeops deploy           create the process work pool and register every deployment
vibeops status / down    what `up` started (where, since when) / stop exactly that
vibeops backup / drill   run backup-<kind> / restore-drill once, on the server `up` started
vibeops <flow-name>      every other flow: purge-retention, cleanup-drills, deploy-staging, ...
vibeops backups          list the backups each region holds
vibeops relay            the Alertmanager -> Prefect events relay

Flow commands take one option per field of the flow's parameter model (the same model the
Prefect UI renders as a form); see deployments/flow_commands.py.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from typing import Any

import typer
import typer.core

from deployments.flow_commands import FLOW_COMMANDS, build_command, drill_line

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


class _Commands(typer.core.TyperGroup):
    """Typer's commands plus one lazily built command per flow (see FLOW_COMMANDS)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *FLOW_COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in FLOW_COMMANDS:
            return build_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The command list without importing every flow (their help is in FLOW_COMMANDS)."""
        rows = []
        for name in super().list_commands(ctx):
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(70)))
        rows += [(name, spec.help) for name, spec in FLOW_COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class _Kind(enum.StrEnum):
    mysql = "mysql"
    mongodb = "mongodb"
    influxdb = "influxdb"


app = typer.Typer(
    help="VibeBench Ops: runbooks as Prefect flows.",
    no_args_is_help=True,
    cls=_Commands,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@app.command("up")
def up(
    rows: int = typer.Option(50_000, min=100, help="experiments rows in the sample database."),
    deploy: bool = typer.Option(True, help="Also create the work pool and register deployments."),
    worker: bool = typer.Option(
        True, help="Also start a process worker, so scheduled and UI-started runs run."
    ),
    drill: bool = typer.Option(True, help="Run a restore drill after the backup."),
) -> None:
    """Run the main job on embedded defaults and print where everything went."""
    from rich.console import Console

    from deployments.flow_commands import use_server
    from deployments.local_stack_cli import ensure_prefect_server

    console = Console(soft_wrap=True)
    with console.status("starting the local Prefect server (SQLite)…"):
        api_url = ensure_prefect_server()
    with use_server(api_url):
        _up(console, api_url, rows, deploy, worker, drill)


def _up(console: Any, api_url: str, rows: int, deploy: bool, worker: bool, drill: bool) -> None:
    from rich.progress import Progress

    from deployments.local_stack_cli import deploy_all, ensure_mysql, start_worker
    from deployments.processes import recorded_address

    host, port, started = ensure_mysql()
    os.environ["VIBEOPS_MYSQL_HOST"], os.environ["VIBEOPS_MYSQL_PORT"] = host, str(port)
    console.print(
        f"MySQL: {host}:{port}" + (" (private MariaDB started in VIBEOPS_HOME)" if started else "")
    )

    from blocks.defaults import local_mysql_connection, vibeops_home
    from tasks.sample_data import create_sample_database

    conn = local_mysql_connection()
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        bar = progress.add_task("seeding sample vibebench database", total=rows)
        create_sample_database(
            conn, "vibebench", rows=rows, on_progress=lambda n: progress.update(bar, completed=n)
        )
    console.print(f"sample database `vibebench` ready ({rows:,} experiments rows)")
    _setup_blocks(console)
    if deploy:
        with console.status("registering deployments (prefect deploy --all)…"):
            deploy_all(api_url)
        console.print("deployments registered on work pool `vibeops-process`")
    if worker and recorded_address("worker") is None:
        log = start_worker(api_url)
        console.print(f"process worker started on pool `vibeops-process` (log: {log})")

    from deployments.flow_commands import run_flow
    from flows.backup import BackupMySQLParams, backup_mysql

    state = run_flow(backup_mysql, BackupMySQLParams())
    manifest = state.result(raise_on_failure=True)
    console.print(
        f"\n[bold green]backup {manifest.backup_id} committed[/] ({manifest.total_size / 1e6:.1f} MB {manifest.codec}):"
    )
    for region in manifest.regions:
        console.print(f"  {region.region}: {region.uri}")
    _archive_binlogs_once(console, conn)
    exit_code = 0
    if drill:
        from flows.restore_drill import RestoreDrillParams, restore_drill

        state = run_flow(restore_drill, RestoreDrillParams())
        outcome = state.result(raise_on_failure=False)
        record = getattr(outcome, "record", outcome)  # DrillFailed carries the record
        if hasattr(record, "passed"):
            console.print(drill_line(record))
            exit_code = 0 if record.passed else 1
            if not record.passed:
                console.print("  " + "; ".join(record.reasons))
        else:
            console.print(f"[red]restore drill failed:[/] {outcome}")
            exit_code = 1
    console.print(f"\nPrefect UI: {api_url.removesuffix('/api')}  (state in {vibeops_home()})")
    console.print("`vibeops status` lists what runs; `vibeops down` stops it.")
    raise typer.Exit(exit_code)


def _archive_binlogs_once(console, conn) -> None:  # type: ignore[no-untyped-def]
    """Some writes after the base backup, then one archive-binlogs run (RPO: minutes)."""
    from datetime import UTC, datetime

    from flows.archive_binlogs import archive_binlogs
    from tasks.sample_data import write_audit_rows

    write_audit_rows(conn, "vibebench", 20)
    outcome = archive_binlogs(return_state=True).result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        console.print(f"[yellow]binlog archiving is not active:[/] {outcome}")
        return
    point = outcome.point
    console.print(
        f"binlogs archived: {len(outcome.archived)} segment(s) in every region"
        + (
            f"; newest restorable point {point.point_at:%H:%M:%S} UTC "
            f"({point.age_seconds(datetime.now(UTC)):.0f} s ago)"
            if point
            else ""
        )
    )


def _setup_blocks(console: Any) -> None:
    import blocks
    from blocks.defaults import save_local_blocks

    for name in blocks.__all__:
        getattr(blocks, name).register_type_and_schema()
    saved = save_local_blocks()
    console.print(
        "blocks registered; saved " + ", ".join(f"`{name}`" for name in saved), soft_wrap=True
    )


@app.command("setup-blocks")
def setup_blocks() -> None:
    """Register every block type and save the embedded default blocks."""
    from rich.console import Console

    _setup_blocks(Console())


@app.command("deploy")
def deploy() -> None:
    """Create the process work pool if missing and register every deployment in prefect.yaml."""
    from deployments.local_stack_cli import deploy_all, prefect_api_url

    deploy_all(prefect_api_url())
    typer.echo(
        "deployments registered; start a worker: prefect worker start --pool vibeops-process"
    )


@app.command("status")
def status(
    json_output: bool = typer.Option(False, "--json", help="Print the processes as JSON."),
) -> None:
    """What `vibeops up` started: which process, where, since when, and whether it still runs."""
    from deployments.processes import matches, recorded

    rows = [{**record.__dict__, "running": matches(record)} for record in recorded()]
    if json_output:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("nothing recorded: `vibeops up` has not started anything here")
        return
    for row in rows:
        state = "running" if row["running"] else "NOT RUNNING"
        typer.echo(
            f"{row['name']}: {state}, pid {row['pid']}, {row['address'] or '-'}, "
            f"since {row['started_at']}, log {row['log'] or '-'}"
        )


@app.command("down")
def down(
    timeout: float = typer.Option(
        20.0, min=1, help="Seconds to wait after SIGINT, then after SIGTERM, before escalating."
    ),
) -> None:
    """Stop what `vibeops up` started (by the PIDs it recorded), and nothing else."""
    from deployments.processes import recorded, stop

    order = {"worker": 0, "prefect-server": 1, "mariadb": 2}
    records = sorted(recorded(), key=lambda r: order.get(r.name, 0))
    if not records:
        typer.echo("nothing recorded: `vibeops up` has not started anything here")
    failed = False
    for record in records:
        outcome = stop(record, timeout_seconds=timeout)
        failed = failed or outcome.startswith("still")
        typer.echo(f"{record.name} (pid {record.pid}): {outcome}")
    raise typer.Exit(1 if failed else 0)


@app.command("backups")
def backups(
    source: str = typer.Option("vibebench", help="Logical source name."),
    kind: _Kind = typer.Option(_Kind.mysql, help="Store kind."),
    store_block: str = typer.Option("", help="BackupStore block name (empty: local folders)."),
    json_output: bool = typer.Option(False, "--json", help="Print the entries as JSON."),
) -> None:
    """List the backups each region holds, newest first, with their state (e.g. incomplete)."""
    from blocks.defaults import resolve_store
    from deployments.backup_listing import entry_row, render_rows
    from tasks.catalog import scan_backups
    from tasks.storage import open_store

    rows = [
        entry_row(entry)
        for destination in resolve_store(store_block).destinations
        for entry in scan_backups(open_store(destination), source, kind.value)
    ]
    if json_output:
        typer.echo(json.dumps(rows))
    else:
        render_rows(rows)


@app.command("relay")
def relay(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 in a container)."),
    port: int = typer.Option(8089, help="Port to listen on."),
    token_file: str = typer.Option(
        "", help="File holding the bearer token Alertmanager sends (else $VIBEOPS_RELAY_TOKEN)."
    ),
    prefect_api_url: str = typer.Option("", help="Prefect API URL (default: PREFECT_API_URL)."),
    dedupe_window: float = typer.Option(
        300.0, min=0, help="Seconds in which a repeat of the same alert and status is dropped."
    ),
) -> None:
    """Relay Alertmanager webhooks to Prefect events, so alerts start their runbooks."""
    from pathlib import Path

    from deployments.relay.app import run_relay
    from tasks.errors import ConfigurationError

    try:
        run_relay(
            host,
            port,
            Path(token_file) if token_file else None,
            prefect_api_url or None,
            dedupe_window,
        )
    except ConfigurationError as exc:
        typer.echo(f"vibeops relay: {exc}", err=True)
        raise typer.Exit(2) from None


# Typer's error classes, reached through its public BadParameter (Typer vendors Click).
_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)
_CLI_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def main(argv: list[str] | None = None) -> int:
    """The `vibeops` entry point: usage errors and refusals in one line, never a traceback."""
    from tasks.errors import VibeOpsError

    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="vibeops", standalone_mode=False)
    except _USAGE_ERROR as usage_error:
        exc: Any = usage_error
        ctx = exc.ctx
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            return 2
        where = ctx.command_path if ctx is not None else "vibeops"
        typer.echo(f"{where}: {exc.format_message()} (see: {where} --help)", err=True)
        return int(exc.exit_code)
    except _CLI_ERROR as cli_error:
        failure: Any = cli_error
        typer.echo(f"vibeops: {failure.format_message()}", err=True)
        return int(failure.exit_code)
    except typer.Abort:
        typer.echo("vibeops: aborted", err=True)
        return 1
    except VibeOpsError as exc:
        typer.echo(f"vibeops: {type(exc).__name__}: {exc}", err=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
