"""restore-mysql: the Recovery Procedure as a runbook (base backup + archived binlogs up to `to`).

Refusals first (nothing changes) -> plan -> [replace: final backup] -> base on a throwaway
server, replay up to `to` -> logical: dump into the new database (replace: RENAME TABLE swap,
old tables kept) / physical: the throwaway server stays up -> report + events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from pydantic import BaseModel, Field, field_validator

from blocks.defaults import resolve_mysql, resolve_store
from flows.backup import backup_mysql
from flows.forms import form
from flows.run_names import run_name
from tasks.drill import region_try_order
from tasks.errors import ConfigurationError, RestoreRefused, VibeOpsError
from tasks.form_fields import MARIADB_IDENTIFIER, schema_pattern
from tasks.manifest import SOURCE_NAME, validate_source_name
from tasks.pitr_restore import (
    BaseOnServer,
    choose_segments,
    remove_server_task,
    replay_task,
    restore_base_task,
)
from tasks.restore_mysql import (
    RestoreReport,
    check_restore_target,
    choose_base,
    committed_bases,
    gap_text,
    load_copy_task,
    parse_restore_to,
    physical_switch_hint,
    render_report,
    side_names,
    swap_task,
    valid_database_name,
)
from tasks.storage import open_store

# `latest`, a backup id, or an ISO-8601 time (what parse_restore_to accepts, for the API).
RESTORE_TO = (
    r"^\s*(latest|[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}(:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)\s*$"
)


class RestoreMySQLParams(BaseModel):
    """Parameters of restore-mysql (rendered as a form in the Prefect UI)."""

    source: str = Field(
        default="vibebench",
        description="Logical source name: restores the backups under mysql/{source}/.",
        json_schema_extra=schema_pattern(SOURCE_NAME),
    )
    store_block: str = Field(
        default="", description="Name of a 'VibeOps Backup Store' block; empty = local folders."
    )
    prefer_region: str = Field(
        default="", description="Region to read first; empty = the store's primary."
    )
    target_connection_block: str = Field(
        default="",
        description="Name of a 'VibeOps MySQL Connection' block of the server to restore onto; "
        "empty = the local server.",
    )
    target_database: str = Field(
        default="",
        description="Database to restore into. Mode 'new': must not exist or be empty. Mode "
        "'replace': the live database whose tables are swapped out (kept under a dated name).",
        json_schema_extra=schema_pattern(f"^$|{MARIADB_IDENTIFIER}"),
    )
    to: str = Field(
        default="latest",
        description="'latest' (newest archived point), an ISO-8601 time such as "
        "2026-12-02T14:05:00Z (the last transaction before it), or a backup id (that base alone).",
        json_schema_extra=schema_pattern(RESTORE_TO),
    )
    mode: Literal["new", "replace"] = Field(
        default="new", description="'new' = into a new database; 'replace' = swap a live one."
    )
    confirm: str = Field(
        default="",
        description="Mode 'replace' only: type the target database's name to confirm.",
    )
    dry_run: bool = Field(
        default=True, description="Only check and plan; change nothing (manual runs default)."
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return validate_source_name(value)

    @field_validator("target_database")
    @classmethod
    def _target(cls, value: str) -> str:
        return valid_database_name(value, "target_database") if value else value

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        parse_restore_to(value)
        return value.strip()


def _resource(source: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"vibeops.restore.mysql.{source}",
        "prefect.resource.name": f"restore of {source}",
    }


@flow(
    name="restore-mysql",
    flow_run_name=run_name("restore-mysql-{source}"),
    description="Restore a MySQL base backup plus archived binlogs up to a point, into a new "
    "database or (confirmed, after a final backup) in place of a live one.",
    timeout_seconds=8 * 3600,
)
@form(RestoreMySQLParams)
def restore_mysql(params: RestoreMySQLParams) -> RestoreReport:
    """Run the Recovery Procedure.

    Raises:
        RestoreRefused: before anything changed (non-empty target, confirm mismatch).
        VibeOpsError: a step failed (after the report and the failure event).
    """
    if not params.target_database:
        raise ConfigurationError(
            "target_database is required: the database to restore into (mode 'new': a new or "
            "empty one; mode 'replace': the live one, with confirm = its name)"
        )
    logger = get_run_logger()
    point = parse_restore_to(params.to)
    target = resolve_mysql(params.target_connection_block)
    stores = {d.region: open_store(d) for d in resolve_store(params.store_block).destinations}
    order = region_try_order(list(stores), params.prefer_region or None)
    report = RestoreReport(
        source=params.source,
        target=f"{target.host}:{target.port}",
        target_database=params.target_database,
        mode=params.mode,
        to=point.describe(),
        dry_run=params.dry_run,
        started_at=datetime.now(UTC),
    )
    base_server: BaseOnServer | None = None
    try:
        with tags(f"db:{target.host}:{target.port}", "restore-mysql"):
            check_restore_target(target, params.mode, params.target_database, params.confirm)
            report.step("target checked")
            base = choose_base(committed_bases(stores, order, params.source), point)
            report.base_id, report.base_engine = base.backup_id, base.engine
            report.base_consistent_at = base.consistent_at
            chain = choose_segments(stores, order, base) if point.kind != "backup" else None
            report.segments = len(chain.segments) if chain else 0
            report.gap = gap_text(chain.gap) if chain else None
            if params.mode == "replace" and base.engine == "physical":
                raise ConfigurationError(
                    "mode 'replace' swaps tables on the live server; a physical base restores "
                    "into a new server folder instead: use mode 'new'"
                )
            report.step(f"planned: base {base.backup_id}, {report.segments} segment(s)")
            if params.dry_run:
                report.finished_at = None
                return _publish(report, "planned")
            restore_into, keep = (
                side_names(params.target_database, report.started_at)
                if params.mode == "replace"
                else (params.target_database, None)
            )
            if params.mode == "replace":
                # Kept with the source's backups when it is the source's own database.
                final = backup_mysql(
                    source=params.source
                    if params.target_database == base.database
                    else params.target_database,
                    database=params.target_database,
                    connection_block=params.target_connection_block,
                    store_block=params.store_block,
                )
                report.final_backup_id = final.backup_id
                report.step(f"final backup {final.backup_id} of {params.target_database}")
            base_server = restore_base_task(
                base, stores, order, f"restore-{params.source}", [target.port]
            )
            report.base_region = base_server.region
            report.fallbacks += [f"base {r}: {why}" for r, why in base_server.failed.items()]
            report.step(f"base restored on a throwaway server from {base_server.region}")
            if chain and chain.segments:
                outcome = replay_task(
                    base,
                    chain.segments,
                    stores,
                    order,
                    base_server.connection,
                    to=point.at if point.kind == "time" else None,
                )
                report.point_reached = outcome.result.point_at
                report.gtid_reached = outcome.result.stop_gtid
                report.transactions_replayed = outcome.result.transactions
                report.fallbacks += [
                    f"segment {file} {region}: {why}"
                    for file, failures in outcome.fallbacks.items()
                    for region, why in failures.items()
                ]
                report.step(f"replayed {outcome.result.transactions} transaction(s)")
            if base.engine == "physical":
                server = base_server.server
                report.restored_into = f"throwaway server 127.0.0.1:{server.port}"
                report.switch_hint = physical_switch_hint(
                    str(server.workdir), server.port, base.database
                )
                base_server = None  # stays up: it IS the restore
            else:
                load_copy_task(base_server.connection, base.database, target, restore_into)
                report.restored_into = restore_into
                report.step(f"copied into {restore_into}")
                if keep is not None:
                    swap_task(target, params.target_database, restore_into, keep)
                    report.kept_as = keep
                    report.step(f"swapped; old tables kept in {keep}")
            report.finished_at = datetime.now(UTC)
    except RestoreRefused as exc:
        report.error = str(exc)
        _publish(report, "refused")
        raise
    except VibeOpsError as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        logger.error("restore failed: %s", exc)
        _publish(report, "failed")
        raise
    finally:
        if base_server is not None:
            remove_server_task(base_server.server)
    return _publish(report, "restored")


def _publish(report: RestoreReport, outcome: str) -> RestoreReport:
    report.outcome = outcome  # type: ignore[assignment]
    create_markdown_artifact(
        key=f"restore-mysql-{report.source.replace('_', '-').replace('.', '-').lower()}",
        markdown=render_report(report),
        description=f"restore-mysql {outcome}",
    )
    emit_event(
        event=f"vibeops.restore.{outcome}",
        resource=_resource(report.source),
        payload=report.payload(),
    )
    get_run_logger().info("restore-mysql %s: %s", outcome, report.payload())
    return report
