"""archive-binlogs: copy every closed binary log into every region, so RPO is minutes, not a day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger, tags
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event
from pydantic import BaseModel, Field, field_validator

from blocks.defaults import resolve_mysql, resolve_store
from flows.forms import form
from flows.run_names import run_name
from tasks.binlog_archive import (
    base_coverage_gap,
    last_archived,
    pending_logs,
    work_folder,
)
from tasks.binlog_catalog import newest_restorable_point_in_regions
from tasks.binlog_report import ArchiveRun, archived_payload, gap_payload, render_archive_report
from tasks.binlog_tasks import archive_one, bound_lag, preflight_binlog_archive, read_archive
from tasks.errors import BinlogGapDetected
from tasks.form_fields import DURATION_HELP, Duration, schema_pattern
from tasks.manifest import SOURCE_NAME, validate_source_name
from tasks.storage import open_store


class ArchiveBinlogsParams(BaseModel):
    """Parameters of archive-binlogs (rendered as a form in the Prefect UI)."""

    source: str = Field(
        default="vibebench",
        description="Logical name of the source (the same as backup-mysql's); segments go under "
        "mysql/SOURCE/binlog/ in every region.",
        json_schema_extra=schema_pattern(SOURCE_NAME),
    )
    connection_block: str = Field(
        default="",
        description="Name of a 'VibeOps MySQL Connection' block for the archive user (needs "
        "REPLICATION SLAVE, BINLOG MONITOR; RELOAD to flush); empty = local 127.0.0.1:3306.",
    )
    store_block: str = Field(
        default="",
        description="Name of a 'VibeOps Backup Store' block; empty = two local folders.",
    )
    max_lag: Duration = Field(
        default=timedelta(minutes=5),
        gt=timedelta(0),
        description="Archive lag to keep: the active binary log is flushed (FLUSH BINARY LOGS) "
        f"when its oldest commit would be older than this by the next run. {DURATION_HELP}",
    )
    schedule_interval: Duration = Field(
        default=timedelta(minutes=5),
        gt=timedelta(0),
        description=f"How often this deployment runs (the schedule's interval). {DURATION_HELP}",
    )
    flush: bool = Field(
        default=True,
        description="Flush the active binary log to bound the lag (off: archive only files the "
        "server closed itself).",
    )
    compression_level: int = Field(default=3, ge=1, le=19, description="zstd level (1-19).")

    @field_validator("source")
    @classmethod
    def _source_name(cls, value: str) -> str:
        return validate_source_name(value)


def binlog_resource(source: str) -> dict[str, str]:
    """The Prefect event resource of one source's binlog archive."""
    return {
        "prefect.resource.id": f"vibeops.binlog.mysql.{source}",
        "prefect.resource.name": source,
    }


def _artifact_key(source: str) -> str:
    return f"binlog-archive-{source.replace('_', '-').replace('.', '-').lower()}"


@flow(
    name="archive-binlogs",
    flow_run_name=run_name("archive-binlogs-{source}"),
    description="Copy each closed MySQL/MariaDB binary log to every region (zstd, sha256, "
    "read-back verified, segment manifest last); flush to bound the lag; fail on gaps.",
    timeout_seconds=3600,
)
@form(ArchiveBinlogsParams)
def archive_binlogs(params: ArchiveBinlogsParams) -> ArchiveRun:
    """Archive the binary logs closed since the last archived one.

    Raises:
        BinlogGapDetected: something is not restorable (the event says what to do).
    """
    logger = get_run_logger()
    conn = resolve_mysql(params.connection_block, "")
    stores = [open_store(d) for d in resolve_store(params.store_block).destinations]
    run = ArchiveRun(source=params.source, started_at=datetime.now(UTC))
    try:
        with (
            tags(f"db:{conn.host}:{conn.port}", f"binlog-archive:{params.source}"),
            work_folder() as work,
        ):
            state = preflight_binlog_archive(conn, stores)
            segments, newest_base = read_archive(stores, params.source)
            if params.flush:
                check = bound_lag(conn, state, params.max_lag, params.schedule_interval, work)
                state, run.lag_before_s, run.flushed = (
                    check.state,
                    check.lag_before_s,
                    check.flushed,
                )
                run.notes += [check.note] if check.note else []
            last = last_archived(segments)
            start_file = newest_base.binlog_file if newest_base else None
            todo = pending_logs(state, last, start_file)
            progress = create_progress_artifact(0.0, description=f"archiving {len(todo)} file(s)")
            for number, log in enumerate(todo, start=1):
                done = archive_one(
                    conn, stores, params.source, log, last, work, params.compression_level
                )
                run.archived.append(done)
                run.gaps += [done.gap] if done.gap else []
                segments.append(done.manifest)
                last = done.manifest
                update_progress_artifact(progress, 100.0 * number / len(todo))  # type: ignore[arg-type]
            update_progress_artifact(progress, 100.0)  # type: ignore[arg-type]
            coverage = base_coverage_gap(newest_base, segments)
            if coverage and not run.gaps:
                run.gaps.append(coverage)
            run.point = newest_restorable_point_in_regions(stores, params.source)
    except Exception as exc:
        create_markdown_artifact(
            key=_artifact_key(params.source),
            markdown=render_archive_report(run, datetime.now(UTC), f"{type(exc).__name__}: {exc}"),
            description="archive-binlogs result",
        )
        emit_event(
            event="vibeops.binlog.archive-failed",
            resource=binlog_resource(params.source),
            payload={"error": type(exc).__name__, "message": str(exc)[:500]},
        )
        raise
    now = datetime.now(UTC)
    create_markdown_artifact(
        key=_artifact_key(params.source),
        markdown=render_archive_report(run, now),
        description="archive-binlogs result",
    )
    emit_event(
        event="vibeops.binlog.archived",
        resource=binlog_resource(params.source),
        payload=archived_payload(run, now),
    )
    for gap in run.gaps:
        emit_event(
            event="vibeops.binlog.gap",
            resource=binlog_resource(params.source),
            payload=gap_payload(run, gap),
        )
    if run.gaps:
        raise BinlogGapDetected(" | ".join(gap.message for gap in run.gaps))
    logger.info("archived %d segment(s) of %s", len(run.archived), params.source)
    return run
