"""restore-drill-mongodb: restore the newest MongoDB backup into a scratch database and prove it.

find (primary region, else the other) -> stream download + sha256 + decompress + insert in
batches of at most 500 into `drill_<source>_<backup-id>` -> counts and content sha256 per
collection against the manifest -> RTO/RPO against the targets (tasks.drill.judge) ->
report, history, events -> drop the scratch database, always. The run FAILS when validation
fails or a target is missed; it refuses the source database as its scratch target.
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

from blocks.defaults import resolve_mongo, resolve_store, vibeops_home
from flows.forms import form
from flows.run_names import run_name
from tasks.drill import (
    CopyAttempt,
    DrillFacts,
    DrillRecord,
    DrillSelection,
    DrillTargets,
    append_history,
    check_scratch_target,
    drill_event_payload,
    drill_record,
    failed_copy_outcome,
    format_duration,
    history_file,
    region_try_order,
    scratch_database_name,
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
from tasks.manifest import SOURCE_NAME, BackupManifest
from tasks.mongo import (
    MAX_INSERT_BATCH,
    SYSTEM_DATABASES,
    MongoRestoreStats,
    drop_scratch,
    restore_mongo_copy,
    validate_mongo_restore,
)
from tasks.mongo_archive import CollectionParity
from tasks.restore import BackupSearch, find_backup
from tasks.storage import open_store

ENGINE = "mongo-archive"


class RestoreDrillMongoDBParams(DrillSelection):
    """Parameters of restore-drill-mongodb (rendered as a form in the Prefect UI)."""

    source: str = Field(
        default="vibebench",
        description="Logical source name: restores mongodb/{source}/ backups.",
        json_schema_extra=schema_pattern(SOURCE_NAME),
    )
    drill_server_block: str = Field(
        default="",
        description="'VibeOps MongoDB Connection' block of the drill server; empty = local.",
    )
    rpo_target: Duration = Field(
        default=timedelta(hours=25), description="Recovery point objective (nightly backups)."
    )
    insert_batch: int = Field(
        default=MAX_INSERT_BATCH,
        ge=1,
        le=MAX_INSERT_BATCH,
        description="Documents per insert while restoring (at most 500).",
    )


@dataclass
class _Drill:
    """What the drill learned, for the report, the history and the events."""

    params: RestoreDrillMongoDBParams
    started: datetime
    search: BackupSearch | None = None
    scratch: str | None = None
    attempts: list[CopyAttempt] = field(default_factory=list)
    stats: MongoRestoreStats | None = None
    parity: list[CollectionParity] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    validated_at: datetime | None = None
    problems: list[str] = field(default_factory=list)
    refusal: RestoreTargetRefused | None = None
    scratch_fate: str = "not created"

    @property
    def manifest(self) -> BackupManifest | None:
        return self.search.choice.manifest if self.search and self.search.choice else None


@flow(
    name="restore-drill-mongodb",
    flow_run_name=run_name("restore-drill-mongodb-{source}"),
    description="Restore the newest MongoDB backup into a scratch database, validate, RTO/RPO.",
    timeout_seconds=8 * 3600,
)
@form(RestoreDrillMongoDBParams)
def restore_drill_mongodb(params: RestoreDrillMongoDBParams) -> DrillRecord:
    """Prove that a MongoDB backup restores within the RTO and is recent enough for the RPO.

    Returns:
        The drill's history record.

    Raises:
        RestoreTargetRefused: the scratch database would be the source (nothing is written).
        DrillFailed: validation failed or a target was missed (after the report).
    """
    server = resolve_mongo(params.drill_server_block, field="drill_server_block")
    protected = [params.source, server.database, *SYSTEM_DATABASES]
    if params.scratch_database:
        check_scratch_target(params.scratch_database, protected)
    stores = {d.region: open_store(d) for d in resolve_store(params.store_block).destinations}
    order = region_try_order(list(stores), params.prefer_region or None)
    drill = _Drill(params, datetime.now(UTC))
    created = False
    try:
        with tags(f"db:{server.host}:{server.port}", "restore-drill"):
            clock = time.perf_counter()
            drill.search = find_backup(stores, order, params.source, params.backup, "mongodb")
            drill.phases["find"] = time.perf_counter() - clock
            manifest = drill.manifest
            if manifest is None or drill.search.choice is None:
                raise DrillFailed(
                    f"no committed MongoDB backup of {params.source!r} matching "
                    f"{params.backup!r} in the reachable regions"
                )
            protected.append(manifest.database)
            drill.scratch = params.scratch_database or scratch_database_name(
                params.source, manifest.backup_id
            )
            check_scratch_target(drill.scratch, protected)
            marker = {
                "drill_run": str(flow_run.get_id() or "local"),
                "source": params.source,
                "backup_id": manifest.backup_id,
                "created_at": datetime.now(UTC),
            }
            for region in drill.search.choice.regions:
                clock = time.perf_counter()
                created = True
                try:
                    drill.stats = restore_mongo_copy(
                        server, drill.scratch, manifest, stores[region], marker, params.insert_batch
                    )
                except (BackupVerificationError, StorageError, RestoreLoadError) as exc:
                    _record_failed_copy(drill, region, exc, time.perf_counter() - clock)
                    if isinstance(exc, RestoreLoadError):
                        break
                    continue
                drill.attempts.append(
                    CopyAttempt(
                        region, "restored", objects=drill.stats.objects, seconds=drill.stats.seconds
                    )
                )
                break
            if drill.stats is None:
                raise DrillFailed("no region's copy could be restored")
            clock = time.perf_counter()
            drill.parity = validate_mongo_restore(server, drill.scratch, manifest)
            drill.phases["validate"] = time.perf_counter() - clock
            drill.validated_at = datetime.now(UTC)
            drill.problems += [f"{p.collection}: {p.problem}" for p in drill.parity if not p.ok]
    except VibeOpsError as exc:
        if isinstance(exc, RestoreTargetRefused):
            drill.refusal = exc
        drill.problems.append(
            str(exc) if isinstance(exc, DrillFailed) else f"{type(exc).__name__}: {exc}"
        )
        get_run_logger().error("drill failed: %s", exc)
    finally:
        if created and drill.scratch:
            try:
                dropped = drop_scratch(server, drill.scratch, protected)
                drill.scratch_fate = f"`{drill.scratch}` {'dropped' if dropped else 'absent'}"
            except VibeOpsError as exc:
                drill.scratch_fate = f"`{drill.scratch}` NOT dropped ({exc}); drop it by hand"
                drill.problems.append(f"scratch database not dropped: {exc}")
    record, reasons = _publish(drill)
    if drill.refusal is not None:
        raise drill.refusal
    if not record.passed:
        error = DrillFailed(f"MongoDB restore drill of {params.source!r} failed: " + reasons)
        error.record = record  # type: ignore[attr-defined]  # for callers printing RTO/RPO
        raise error
    return record


def _record_failed_copy(drill: _Drill, region: str, exc: Exception, seconds: float) -> None:
    outcome = failed_copy_outcome(exc)
    drill.attempts.append(CopyAttempt(region, outcome, str(exc)[:600], seconds=seconds))
    drill.phases["failed_attempts"] = drill.phases.get("failed_attempts", 0.0) + seconds
    get_run_logger().warning("region %s: %s copy: %s", region, outcome, exc)


def _publish(drill: _Drill) -> tuple[DrillRecord, str]:
    """Verdict, history record, report artifact and the passed/failed event."""
    params, manifest, stats = drill.params, drill.manifest, drill.stats
    phases = dict(drill.phases)
    if stats:
        phases.update(download=stats.download_s, load=stats.load_s)
    facts = DrillFacts(
        source=f"mongodb/{params.source}",
        targets=DrillTargets(rto=params.rto_target, rpo=params.rpo_target),
        started=drill.started,
        manifest=manifest,
        attempts=drill.attempts,
        unreachable=drill.search.unreachable if drill.search else (),
        validated_at=drill.validated_at,
        problems=drill.problems,
        phases=phases,
        rows=manifest.total_rows if manifest else None,
        bytes=stats.compressed_bytes if stats else None,
        engine=ENGINE,
    )
    record, verdict = drill_record(
        facts, datetime.now(UTC), str(flow_run.get_id() or ""), flow_run.get_name()
    )
    rto = timedelta(seconds=record.rto_seconds) if record.rto_seconds is not None else None
    rpo = timedelta(seconds=record.rpo_seconds) if record.rpo_seconds is not None else None
    append_history(history_file(vibeops_home()), record)
    create_markdown_artifact(
        key=f"restore-drill-mongodb-{params.source.replace('_', '-').replace('.', '-').lower()}",
        markdown=_report(drill, record, rto, rpo),
        description=f"restore-drill-mongodb {verdict.label}",
    )
    emit_event(
        event=f"vibeops.drill.{'passed' if verdict.passed else 'failed'}",
        resource={
            "prefect.resource.id": f"vibeops.drill.mongodb.{params.source}",
            "prefect.resource.name": f"MongoDB restore drill of {params.source}",
        },
        payload=drill_event_payload("mongodb", record),
    )
    get_run_logger().info(
        "MongoDB restore drill %s: RTO %s (target %s), RPO %s (target %s)",
        verdict.label,
        format_duration(rto),
        format_duration(params.rto_target),
        format_duration(rpo),
        format_duration(params.rpo_target),
    )
    return record, "; ".join(verdict.reasons)


def _report(
    drill: _Drill, record: DrillRecord, rto: timedelta | None, rpo: timedelta | None
) -> str:
    params, manifest = drill.params, drill.manifest
    mark = "PASSED ✅" if record.passed else "FAILED ❌"
    lines = [
        f"# MongoDB restore drill of `{params.source}`: {mark}",
        "",
        "| objective | measured | target |",
        "|---|---|---|",
        f"| RTO (start to validated restore) | {format_duration(rto)} | "
        f"{format_duration(params.rto_target)} |",
        f"| RPO (start minus backup's consistent point) | {format_duration(rpo)} | "
        f"{format_duration(params.rpo_target)} |",
        "",
        *[f"- {reason}" for reason in record.reasons],
        "",
    ]
    if manifest:
        lines += [
            f"Backup `{manifest.backup_id}` of `{manifest.database}`: {len(manifest.tables)} "
            f"collections, {manifest.total_rows:,} documents, {manifest.total_size / 1e6:,.1f} MB.",
            "",
        ]
    if drill.attempts:
        lines += ["| region | outcome | detail |", "|---|---|---|"]
        lines += [
            f"| {a.region} | {a.outcome} | {_cell(a.detail or ', '.join(a.objects))} |"
            for a in drill.attempts
        ]
        lines.append("")
    if drill.parity:
        lines += [
            "| collection | documents (backup) | documents (restored) | sha256 match |",
            "|---|---:|---:|---|",
        ]
        lines += [
            f"| {p.collection} | {p.expected_count} | {p.actual_count} | "
            f"{'yes' if p.ok else 'NO: ' + _cell(p.problem or '')} |"
            for p in drill.parity
        ]
        lines.append("")
    if record.phases:
        lines.append("Phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in record.phases.items()))
    lines.append(f"Scratch database: {drill.scratch_fate}.")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]
