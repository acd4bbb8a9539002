"""restore-drill-influxdb: restore the newest InfluxDB backup into a scratch bucket and prove it.

find (primary region, else the other) -> verify the copy (size, sha256, decompress) -> load the
line protocol into `drill_<source>_<backup-id>` in batches -> counts and sha256 per measurement
against the manifest -> RTO/RPO against the targets -> report, history, events -> delete the
scratch bucket, always. The run FAILS when validation fails or a target is missed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run
from pydantic import BaseModel, Field, field_validator

from blocks.defaults import resolve_store, vibeops_home
from blocks.influx import resolve_influx
from tasks.drill import (
    CopyAttempt,
    DrillRecord,
    DrillTargets,
    Verdict,
    append_history,
    format_duration,
    history_file,
    judge,
    region_try_order,
    rpo_of,
    validate_backup_selector,
)
from tasks.errors import (
    BackupVerificationError,
    DrillFailed,
    RestoreLoadError,
    RestoreTargetRefused,
    StorageError,
    VibeOpsError,
)
from tasks.influx_backup import (
    InfluxBackupSearch,
    InfluxRestoreStats,
    check_scratch_absent,
    check_scratch_bucket,
    drop_scratch_bucket,
    find_influx_backup,
    restore_influx_copy,
    scratch_bucket_name,
    validate_influx_restore,
)
from tasks.manifest import BackupManifest, validate_source_name
from tasks.storage import open_store


class RestoreDrillInfluxParams(BaseModel):
    """Parameters of restore-drill-influxdb (rendered as a form in the Prefect UI)."""

    source: str = Field(
        default="vibebench-metrics",
        description="Logical source name: restores influxdb/<source>/ backups.",
    )
    backup: str = Field(
        default="latest",
        description="'latest', a backup id (20250101T020000Z-a1b2c3) or a day (2025-01-01).",
    )
    store_block: str = Field(
        default="", description="Name of a 'VibeOps Backup Store' block; empty = local folders."
    )
    connection_block: str = Field(
        default="",
        description="'VibeOps InfluxDB Connection' block of the drill server; empty = "
        "VIBEOPS_INFLUX_* environment.",
    )
    prefer_region: str = Field(
        default="", description="Region to restore from first; empty = the store's primary."
    )
    scratch_bucket: str = Field(
        default="",
        description="Scratch bucket; empty = drill_<source>_<backup-id>. Never the source bucket.",
    )
    rto_target: timedelta = Field(
        default=timedelta(minutes=30), description="Recovery time objective (seed: 30 min)."
    )
    rpo_target: timedelta = Field(
        default=timedelta(hours=25),
        description="Recovery point objective (nightly backups: 25 h).",
    )
    batch_lines: int = Field(
        default=5_000, ge=100, le=100_000, description="Lines of line protocol per write."
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return validate_source_name(value)

    @field_validator("backup")
    @classmethod
    def _backup(cls, value: str) -> str:
        return validate_backup_selector(value.strip())

    @field_validator("rto_target", "rpo_target")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("targets must be longer than zero, e.g. PT30M")
        return value


@dataclass
class _Drill:
    params: RestoreDrillInfluxParams
    started: datetime
    search: InfluxBackupSearch | None = None
    scratch: str | None = None
    attempts: list[CopyAttempt] = field(default_factory=list)
    stats: InfluxRestoreStats | None = None
    phases: dict[str, float] = field(default_factory=dict)
    validated_at: datetime | None = None
    problems: list[str] = field(default_factory=list)
    scratch_fate: str = "not created"

    @property
    def manifest(self) -> BackupManifest | None:
        return self.search.choice.manifest if self.search and self.search.choice else None


def _resource(source: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"vibeops.drill.influxdb.{source}",
        "prefect.resource.name": f"restore drill of {source} (InfluxDB)",
    }


@flow(
    name="restore-drill-influxdb",
    flow_run_name="restore-drill-influxdb-{params.source}",
    description="Restore the newest InfluxDB backup into a scratch bucket, validate, RTO/RPO.",
    timeout_seconds=8 * 3600,
)
def restore_drill_influxdb(params: RestoreDrillInfluxParams | None = None) -> DrillRecord:
    """Prove that an InfluxDB backup restores within the RTO and is recent enough for the RPO.

    Returns:
        The drill's history record.

    Raises:
        RestoreTargetRefused: the scratch bucket would be the source bucket.
        DrillFailed: validation failed or a target was missed (after the report).
    """
    params = params or RestoreDrillInfluxParams()
    if params.scratch_bucket:
        check_scratch_bucket(params.scratch_bucket, "")
    conn = resolve_influx(params.connection_block)
    stores = {d.region: open_store(d) for d in resolve_store(params.store_block).destinations}
    order = region_try_order(list(stores), params.prefer_region or None)
    drill = _Drill(params, datetime.now(UTC))
    refused: RestoreTargetRefused | None = None
    try:
        with tags(f"influx:{conn.url}", "restore-drill"):
            clock = time.perf_counter()
            drill.search = find_influx_backup(stores, order, params.source, params.backup)
            drill.phases["find"] = time.perf_counter() - clock
            manifest = drill.manifest
            if manifest is None or drill.search.choice is None:
                raise DrillFailed(
                    f"no committed InfluxDB backup of {params.source!r} matching "
                    f"{params.backup!r} in the reachable regions"
                )
            scratch = params.scratch_bucket or scratch_bucket_name(
                params.source, manifest.backup_id
            )
            check_scratch_bucket(scratch, manifest.database)
            check_scratch_absent(conn, scratch)
            drill.scratch = scratch
            for region in drill.search.choice.regions:
                clock = time.perf_counter()
                try:
                    drill.stats = restore_influx_copy(
                        conn, manifest, stores[region], scratch, params.batch_lines
                    )
                except (BackupVerificationError, StorageError, RestoreLoadError) as exc:
                    _record_failed_copy(drill, region, exc, time.perf_counter() - clock)
                    if isinstance(exc, RestoreLoadError):
                        break
                    continue
                drill.attempts.append(
                    CopyAttempt(region, "restored", seconds=time.perf_counter() - clock)
                )
                break
            if drill.stats is None:
                raise DrillFailed("no region's copy could be restored")
            drill.phases["download"] = drill.stats.verify_s
            drill.phases["load"] = drill.stats.load_s
            clock = time.perf_counter()
            drill.problems += validate_influx_restore(conn, manifest, scratch)
            drill.phases["validate"] = time.perf_counter() - clock
            drill.validated_at = datetime.now(UTC)
    except RestoreTargetRefused as exc:
        refused = exc
        drill.problems.append(f"RestoreTargetRefused: {exc}")
    except VibeOpsError as exc:
        drill.problems.append(
            str(exc) if isinstance(exc, DrillFailed) else f"{type(exc).__name__}: {exc}"
        )
        get_run_logger().error("drill failed: %s", exc)
    finally:
        if drill.scratch:
            try:
                dropped = drop_scratch_bucket(conn, drill.scratch)
                drill.scratch_fate = (
                    f"`{drill.scratch}` {'deleted' if dropped else 'never created'}"
                )
            except VibeOpsError as exc:
                drill.scratch_fate = f"`{drill.scratch}` NOT deleted: {exc}"
                drill.problems.append(f"scratch bucket {drill.scratch!r} was not deleted: {exc}")
    record, verdict = _publish(drill)
    if refused is not None:
        raise refused
    if not verdict.passed:
        raise DrillFailed(
            f"InfluxDB restore drill of {params.source!r} failed: " + "; ".join(verdict.reasons)
        )
    return record


def _record_failed_copy(drill: _Drill, region: str, exc: Exception, seconds: float) -> None:
    outcome: Literal["corrupt", "unreachable", "failed"] = (
        "corrupt"
        if isinstance(exc, BackupVerificationError)
        else "unreachable"
        if isinstance(exc, StorageError)
        else "failed"
    )
    manifest = drill.manifest
    assert manifest is not None
    drill.attempts.append(CopyAttempt(region, outcome, str(exc)[:600], seconds=seconds))
    drill.phases["failed_attempts"] = drill.phases.get("failed_attempts", 0.0) + seconds
    get_run_logger().warning("region %s: %s copy: %s", region, outcome, exc)
    if outcome == "corrupt":
        emit_event(
            event="vibeops.drill.corrupt_copy",
            resource={
                "prefect.resource.id": f"vibeops.backup.influxdb.{manifest.source}.{region}",
                "prefect.resource.name": f"{manifest.source} backup copy in {region}",
                "vibeops.region": region,
            },
            related=[_resource(manifest.source) | {"prefect.resource.role": "drill"}],
            payload={"backup_id": manifest.backup_id, "region": region, "error": str(exc)[:500]},
        )


def _publish(drill: _Drill) -> tuple[DrillRecord, Verdict]:
    """Verdict, history record, artifact and the passed/failed event."""
    params, manifest, stats = drill.params, drill.manifest, drill.stats
    rto = drill.validated_at - drill.started if drill.validated_at and not drill.problems else None
    rpo = rpo_of(drill.started, manifest.consistent_at) if manifest else None
    verdict = judge(
        DrillTargets(rto=params.rto_target, rpo=params.rpo_target), rto, rpo, drill.problems
    )
    record = DrillRecord(
        source=params.source,
        flow_run_id=str(flow_run.get_id() or ""),
        flow_run_name=flow_run.get_name(),
        backup_id=manifest.backup_id if manifest else None,
        engine=manifest.engine if manifest else None,
        region=next((a.region for a in drill.attempts if a.outcome == "restored"), None),
        corrupt_regions=[a.region for a in drill.attempts if a.outcome == "corrupt"],
        unreachable_regions=sorted(
            {a.region for a in drill.attempts if a.outcome == "unreachable"}
            | set(drill.search.unreachable if drill.search else {})
        ),
        started_at=drill.started,
        finished_at=datetime.now(UTC),
        rto_seconds=rto.total_seconds() if rto else None,
        rpo_seconds=rpo.total_seconds() if rpo is not None else None,
        rto_target_seconds=params.rto_target.total_seconds(),
        rpo_target_seconds=params.rpo_target.total_seconds(),
        passed=verdict.passed,
        reasons=list(verdict.reasons),
        rows=stats.points if stats else None,
        bytes=stats.compressed_bytes if stats else None,
        phases={k: round(v, 3) for k, v in drill.phases.items()},
    )
    append_history(history_file(vibeops_home()), record)
    create_markdown_artifact(
        key=f"restore-drill-influxdb-{params.source.replace('_', '-').replace('.', '-').lower()}",
        markdown=_report(drill, verdict, record, rto, rpo),
        description=f"restore-drill-influxdb {verdict.label}",
    )
    emit_event(
        event=f"vibeops.drill.{'passed' if verdict.passed else 'failed'}",
        resource=_resource(params.source),
        payload={
            "kind": "influxdb",
            "backup_id": record.backup_id,
            "region": record.region,
            "rto_seconds": record.rto_seconds,
            "rpo_seconds": record.rpo_seconds,
            "rto_target_seconds": record.rto_target_seconds,
            "rpo_target_seconds": record.rpo_target_seconds,
            "corrupt_regions": record.corrupt_regions,
            "unreachable_regions": record.unreachable_regions,
            "reasons": record.reasons[:10],
        },
    )
    get_run_logger().info(
        "InfluxDB restore drill %s: RTO %s (target %s), RPO %s (target %s)%s",
        verdict.label,
        format_duration(rto),
        format_duration(params.rto_target),
        format_duration(rpo),
        format_duration(params.rpo_target),
        "" if verdict.passed else " - " + "; ".join(verdict.reasons),
    )
    return record, verdict


def _report(
    drill: _Drill,
    verdict: Verdict,
    record: DrillRecord,
    rto: timedelta | None,
    rpo: timedelta | None,
) -> str:
    manifest = drill.manifest
    lines = [
        f"# Restore drill (InfluxDB) of `{drill.params.source}`: {verdict.label}",
        "",
        "| fact | value |",
        "|---|---|",
        f"| backup | `{record.backup_id or '-'}` |",
        f"| bucket | `{manifest.database if manifest else '-'}` -> scratch `{drill.scratch or '-'}` |",
        f"| restored from | {record.region or '-'} |",
        f"| values | {record.rows if record.rows is not None else '-'} |",
        f"| RTO | {format_duration(rto)} (target {format_duration(drill.params.rto_target)}) |",
        f"| RPO | {format_duration(rpo)} (target {format_duration(drill.params.rpo_target)}) |",
        f"| scratch bucket | {drill.scratch_fate} |",
        "",
        "| region | outcome | seconds | detail |",
        "|---|---|---:|---|",
    ]
    lines += [
        f"| {a.region} | {a.outcome} | {a.seconds:.2f} | {a.detail[:200].replace('|', '/')} |"
        for a in drill.attempts
    ]
    lines += ["", "| phase | seconds |", "|---|---:|"]
    lines += [f"| {name} | {secs:.2f} |" for name, secs in drill.phases.items()]
    if verdict.reasons:
        lines += ["", "## Why it failed", ""] + [f"- {r}" for r in verdict.reasons]
    return "\n".join(lines) + "\n"
