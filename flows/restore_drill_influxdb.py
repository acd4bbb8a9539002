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

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run
from pydantic import Field

from blocks.defaults import resolve_store, vibeops_home
from blocks.influx import InfluxConnection, resolve_influx
from flows.forms import form
from flows.run_names import run_name
from tasks.drill import (
    CopyAttempt,
    DrillFacts,
    DrillRecord,
    DrillSelection,
    DrillTargets,
    Verdict,
    append_history,
    drill_event_payload,
    drill_record,
    failed_copy_outcome,
    format_duration,
    history_file,
    region_try_order,
)
from tasks.errors import (
    BackupVerificationError,
    DrillFailed,
    RestoreLoadError,
    RestoreTargetRefused,
    StorageError,
    VibeOpsError,
)
from tasks.form_fields import Duration, schema_pattern
from tasks.influx_backup import (
    KIND,
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
from tasks.manifest import SOURCE_NAME, BackupManifest
from tasks.storage import ObjectStore, open_store


class RestoreDrillInfluxParams(DrillSelection):
    """Parameters of restore-drill-influxdb (rendered as a form in the Prefect UI)."""

    source: str = Field(
        default="vibebench-metrics",
        description="Logical source name: restores influxdb/{source}/ backups.",
        json_schema_extra=schema_pattern(SOURCE_NAME),
    )
    scratch_database: str = Field(
        default="",
        description="Scratch bucket; empty = drill_{source}_{backup-id}. Never the source bucket.",
    )
    rpo_target: Duration = Field(
        default=timedelta(hours=1),
        description="Recovery point objective (nightly full + hourly incremental backups: 1 h).",
    )
    connection_block: str = Field(
        default="",
        description="'VibeOps InfluxDB Connection' block of the drill server; empty = "
        "VIBEOPS_INFLUX_* environment.",
    )
    batch_lines: int = Field(
        default=5_000, ge=100, le=100_000, description="Lines of line protocol per write."
    )


@dataclass
class _Drill(DrillFacts):
    """DrillFacts plus what only this drill tracks."""

    stores: dict[str, ObjectStore] = field(default_factory=dict)
    search: InfluxBackupSearch | None = None
    scratch: str | None = None
    stats: InfluxRestoreStats | None = None
    scratch_fate: str = "not created"
    chain: list[BackupManifest] = field(default_factory=list)


def _restore_link(
    drill: _Drill, conn: InfluxConnection, link: BackupManifest, batch_lines: int
) -> InfluxRestoreStats | None:
    """Load one backup of the chain from the first region whose copy verifies (None: none)."""
    assert drill.search is not None and drill.scratch is not None
    fresh = link is drill.chain[0]
    regions = drill.search.regions_of(link.backup_id) or (
        drill.search.choice.regions if drill.search.choice else ()
    )
    for region in regions:
        clock = time.perf_counter()
        try:
            stats = restore_influx_copy(
                conn,
                link,
                drill.stores[region],
                drill.scratch,
                batch_lines,
                drill_run=str(flow_run.get_id() or "local"),
                fresh=fresh,
            )
        except (BackupVerificationError, StorageError, RestoreLoadError) as exc:
            _record_failed_copy(drill, region, exc, time.perf_counter() - clock, link)
            if isinstance(exc, RestoreLoadError):
                return None
            continue
        drill.attempts.append(CopyAttempt(region, "restored", seconds=time.perf_counter() - clock))
        return stats
    return None


def _added(a: InfluxRestoreStats, b: InfluxRestoreStats) -> InfluxRestoreStats:
    """Two links' restore figures summed (the region is the last link's)."""
    return InfluxRestoreStats(
        b.region,
        a.points + b.points,
        a.compressed_bytes + b.compressed_bytes,
        a.verify_s + b.verify_s,
        a.load_s + b.load_s,
    )


def _resource(source: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"vibeops.drill.influxdb.{source}",
        "prefect.resource.name": f"restore drill of {source} (InfluxDB)",
    }


@flow(
    name="restore-drill-influxdb",
    flow_run_name=run_name("restore-drill-influxdb-{source}"),
    description="Restore the newest InfluxDB backup into a scratch bucket, validate, RTO/RPO.",
    timeout_seconds=8 * 3600,
)
@form(RestoreDrillInfluxParams)
def restore_drill_influxdb(params: RestoreDrillInfluxParams) -> DrillRecord:
    """Prove that an InfluxDB backup restores within the RTO and is recent enough for the RPO.

    Returns:
        The drill's history record.

    Raises:
        RestoreTargetRefused: the scratch bucket would be the source bucket.
        DrillFailed: validation failed or a target was missed (after the report).
    """
    if params.scratch_database:
        check_scratch_bucket(params.scratch_database, "")
    conn = resolve_influx(params.connection_block)
    stores = {d.region: open_store(d) for d in resolve_store(params.store_block).destinations}
    order = region_try_order(list(stores), params.prefer_region or None)
    targets = DrillTargets(rto=params.rto_target, rpo=params.rpo_target)
    drill = _Drill(f"{KIND}/{params.source}", targets, datetime.now(UTC), stores=stores)
    refused: RestoreTargetRefused | None = None
    try:
        with tags(f"influx:{conn.url}", "restore-drill"):
            clock = time.perf_counter()
            drill.search = find_influx_backup(stores, order, params.source, params.backup)
            drill.phases["find"] = time.perf_counter() - clock
            drill.unreachable = list(drill.search.unreachable)
            choice = drill.search.choice
            drill.manifest = manifest = choice.manifest if choice else None
            if manifest is None or choice is None:
                raise DrillFailed(
                    f"no committed InfluxDB backup of {params.source!r} matching "
                    f"{params.backup!r} in the reachable regions"
                )
            scratch = params.scratch_database or scratch_bucket_name(
                params.source, manifest.backup_id
            )
            check_scratch_bucket(scratch, manifest.database)
            check_scratch_absent(conn, scratch)
            drill.scratch = scratch
            drill.chain = list(drill.search.chain) or [manifest]
            validate_s = 0.0
            for link in drill.chain:
                stats = _restore_link(drill, conn, link, params.batch_lines)
                if stats is None:
                    raise DrillFailed(
                        f"no region's copy could be restored (backup {link.backup_id})"
                    )
                drill.stats = stats if drill.stats is None else _added(drill.stats, stats)
                clock = time.perf_counter()
                problems = validate_influx_restore(conn, link, scratch)
                validate_s += time.perf_counter() - clock
                prefix = f"{link.backup_id}: " if len(drill.chain) > 1 else ""
                drill.problems += [prefix + p for p in problems]
            assert drill.stats is not None
            drill.phases["download"] = drill.stats.verify_s
            drill.phases["load"] = drill.stats.load_s
            drill.rows, drill.bytes = drill.stats.points, drill.stats.compressed_bytes
            drill.phases["validate"] = validate_s
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
    record, verdict = _publish(drill, params)
    if refused is not None:
        raise refused
    if not verdict.passed:
        raise DrillFailed(
            f"InfluxDB restore drill of {params.source!r} failed: " + "; ".join(verdict.reasons)
        )
    return record


def _record_failed_copy(
    drill: _Drill, region: str, exc: Exception, seconds: float, manifest: BackupManifest
) -> None:
    outcome = failed_copy_outcome(exc)
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


def _publish(drill: _Drill, params: RestoreDrillInfluxParams) -> tuple[DrillRecord, Verdict]:
    """Verdict, history record, artifact and the passed/failed event."""
    record, verdict = drill_record(
        drill, datetime.now(UTC), str(flow_run.get_id() or ""), flow_run.get_name()
    )
    append_history(history_file(vibeops_home()), record)
    create_markdown_artifact(
        key=f"restore-drill-influxdb-{params.source.replace('_', '-').replace('.', '-').lower()}",
        markdown=_report(drill, params, verdict, record),
        description=f"restore-drill-influxdb {verdict.label}",
    )
    emit_event(
        event=f"vibeops.drill.{'passed' if verdict.passed else 'failed'}",
        resource=_resource(params.source),
        payload=drill_event_payload(KIND, record),
    )
    get_run_logger().info(
        "InfluxDB restore drill %s: RTO %s s (target %s), RPO %s s (target %s)%s",
        verdict.label,
        record.rto_seconds,
        format_duration(params.rto_target),
        record.rpo_seconds,
        format_duration(params.rpo_target),
        "" if verdict.passed else " - " + "; ".join(verdict.reasons),
    )
    return record, verdict


def _chain_line(chain: list[BackupManifest]) -> str:
    if len(chain) <= 1:
        return "full backup alone" if chain else "-"
    return (
        f"full `{chain[0].backup_id}` + {len(chain) - 1} incremental(s) restored in order; "
        "RPO from the newest incremental"
    )


def _report(
    drill: _Drill, params: RestoreDrillInfluxParams, verdict: Verdict, record: DrillRecord
) -> str:
    manifest = drill.manifest
    rto = None if record.rto_seconds is None else timedelta(seconds=record.rto_seconds)
    rpo = None if record.rpo_seconds is None else timedelta(seconds=record.rpo_seconds)
    lines = [
        f"# Restore drill (InfluxDB) of `{params.source}`: {verdict.label}",
        "",
        "| fact | value |",
        "|---|---|",
        f"| backup | `{record.backup_id or '-'}` |",
        f"| chain | {_chain_line(drill.chain)} |",
        f"| bucket | `{manifest.database if manifest else '-'}` -> scratch `{drill.scratch or '-'}` |",
        f"| restored from | {record.region or '-'} |",
        f"| values | {record.rows if record.rows is not None else '-'} |",
        f"| RTO | {format_duration(rto)} (target {format_duration(params.rto_target)}) |",
        f"| RPO | {format_duration(rpo)} (target {format_duration(params.rpo_target)}) |",
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
