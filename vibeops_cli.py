"""`vibeops`: what an operator does by hand on one machine.

vibeops up               the main job on embedded defaults (server, MySQL, sample data,
                         backup-mysql into two local regions, a restore drill)
vibeops setup-blocks     register block types and save the embedded default blocks
vibeops deploy           create the process work pool and register every deployment
vibeops backup / drill   run one flow once, in this process
vibeops backups          list the backups each region holds
vibeops relay            the Alertmanager -> Prefect events relay
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import typer

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

app = typer.Typer(help="VibeBench Ops: runbooks as Prefect flows.", no_args_is_help=True)


def _use_api(api_url: str):  # type: ignore[no-untyped-def]
    """Point this process's Prefect client at `api_url` (env alone is read too early)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ["PREFECT_API_URL"] = api_url
    return temporary_settings(updates={PREFECT_API_URL: api_url})


@app.command("up")
def up(
    rows: int = typer.Option(50_000, min=100, help="experiments rows in the sample database."),
    deploy: bool = typer.Option(True, help="Also create the work pool and register deployments."),
    drill: bool = typer.Option(True, help="Run a restore drill after the backup."),
) -> None:
    """Run the main job on embedded defaults and print where everything went."""
    from rich.console import Console

    from deployments.local_stack_cli import ensure_prefect_server

    console = Console()
    with console.status("starting the local Prefect server (SQLite)…"):
        api_url = ensure_prefect_server()
    with _use_api(api_url):
        _up(console, api_url, rows, deploy, drill)


def _up(console, api_url: str, rows: int, deploy: bool, drill: bool) -> None:  # type: ignore[no-untyped-def]
    from rich.progress import Progress

    from deployments.local_stack_cli import deploy_all, ensure_mysql

    host, port, started = ensure_mysql()
    os.environ["VIBEOPS_MYSQL_HOST"], os.environ["VIBEOPS_MYSQL_PORT"] = host, str(port)
    console.print(
        f"MySQL: {host}:{port}" + (" (private MariaDB started in VIBEOPS_HOME)" if started else "")
    )

    from blocks.defaults import local_mysql_connection, vibeops_home
    from tasks.sample_data import create_sample_database

    conn = local_mysql_connection()
    with Progress(console=console, transient=True) as progress:
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

    from flows.backup import backup_mysql

    manifest = backup_mysql()
    console.print(
        f"\n[bold green]backup {manifest.backup_id} committed[/] ({manifest.total_size / 1e6:.1f} MB {manifest.codec}):"
    )
    for region in manifest.regions:
        console.print(f"  {region.region}: {region.uri}")
    _archive_binlogs_once(console, conn)
    exit_code = 0
    if drill:
        from flows.restore_drill import restore_drill

        state = restore_drill(return_state=True)
        outcome = state.result(raise_on_failure=False)
        record = getattr(outcome, "record", outcome)  # DrillFailed carries the record
        if hasattr(record, "passed"):
            console.print(_drill_line(record))
            exit_code = 0 if record.passed else 1
            if not record.passed:
                console.print("  " + "; ".join(record.reasons))
        else:
            console.print(f"[red]restore drill failed:[/] {outcome}")
            exit_code = 1
    console.print(f"\nPrefect UI: {api_url.removesuffix('/api')}  (state in {vibeops_home()})")
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


def _drill_line(record) -> str:  # type: ignore[no-untyped-def]
    verdict = "[green]PASSED[/]" if record.passed else "[red]FAILED[/]"
    return (
        f"restore drill {verdict}: RTO {record.rto_seconds or 0:.1f} s (target "
        f"{record.rto_target_seconds:.0f} s), RPO {record.rpo_seconds or 0:.1f} s (target "
        f"{record.rpo_target_seconds:.0f} s), from {record.region or '-'}"
    )


def _setup_blocks(console) -> None:  # type: ignore[no-untyped-def]
    import blocks
    from blocks.defaults import local_backup_store, local_mysql_connection

    for name in blocks.__all__:
        getattr(blocks, name).register_type_and_schema()
    local_mysql_connection().save("local-mysql", overwrite=True)
    local_backup_store().save("local-two-regions", overwrite=True)
    console.print("blocks registered; saved `local-mysql` and `local-two-regions`")


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


@app.command("backup")
def backup(
    database: str = typer.Option("vibebench", help="Database to back up."),
    store_block: str = typer.Option("", help="BackupStore block name (empty: local folders)."),
    codec: str = typer.Option("zstd", help="zstd or gzip."),
) -> None:
    """Run backup-mysql once in this process."""
    from flows.backup import backup_mysql

    manifest = backup_mysql(
        source=database, database=database, store_block=store_block, codec=codec
    )
    typer.echo(f"{manifest.backup_id}: {', '.join(r.uri for r in manifest.regions)}")


@app.command("drill")
def drill(
    source: str = typer.Option("vibebench", help="Source whose newest backup to restore."),
) -> None:
    """Run restore-drill once in this process."""
    from rich.console import Console

    from flows.restore_drill import restore_drill

    state = restore_drill(source=source, return_state=True)
    outcome = state.result(raise_on_failure=False)
    record = getattr(outcome, "record", outcome)
    if not hasattr(record, "passed"):
        Console().print(f"[red]restore drill failed:[/] {outcome}")
        raise typer.Exit(1)
    Console().print(_drill_line(record))
    raise typer.Exit(0 if record.passed else 1)


@app.command("backups")
def backups(
    source: str = typer.Option("vibebench", help="Logical source name."),
    store_block: str = typer.Option("", help="BackupStore block name (empty: local folders)."),
) -> None:
    """List the backups each region holds, newest first (incomplete ones marked)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from blocks.defaults import resolve_store
    from tasks.backup_debris import incomplete_state
    from tasks.catalog import scan_backups
    from tasks.storage import open_store

    now = datetime.now(UTC)
    table = Table("region", "backup id", "state", "consistent at (UTC)", "rows", "size MB")
    for destination in resolve_store(store_block).destinations:
        for entry in scan_backups(open_store(destination), source):
            manifest = entry.manifest
            table.add_row(
                entry.region,
                entry.backup_id,
                "committed" if manifest else f"[red]{escape(incomplete_state(entry, now))}[/]",
                f"{manifest.consistent_at:%Y-%m-%d %H:%M:%S}" if manifest else "-",
                f"{manifest.total_rows:,}" if manifest else "-",
                f"{(entry.total_size + sum(p.size for p in entry.partials)) / 1e6:.1f}",
            )
    Console().print(table)


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


if __name__ == "__main__":
    sys.exit(app())
