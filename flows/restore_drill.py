"""restore-drill: restore the newest committed backup into a scratch database and prove it.

find (primary region, else the other) -> stream download + sha256 + decompress + load into
`drill_<source>_<backup-id>` -> parity + expectations -> RTO/RPO against the targets ->
report, history, events -> drop the scratch database (or keep it for `keep_hours`, after
which `cleanup-drills` drops it). The run FAILS when validation fails or a target is missed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.transactions import transaction
from pydantic import BaseModel, Field

from blocks.defaults import resolve_mongo, resolve_mysql, resolve_store, vibeops_home
from blocks.influx import resolve_influx
from flows.forms import form
from flows.run_names import run_name
from tasks.backup_debris import find_debris, remove_debris
from tasks.drill import (
    CleanupItem,
    CopyAttempt,
    DrillMarker,
    DrillRecord,
    DrillSelection,
    DrillTargets,
    Verdict,
    append_history,
    check_scratch_target,
    failed_copy_outcome,
    format_duration,
    history_file,
    judge,
    plan_cleanup,
    read_history,
    region_try_order,
    rpo_of,
    rto_breakdown,
    scratch_database_name,
)
from tasks.engines import EngineRto, engine_rto_lines, rto_by_engine
from tasks.errors import (
    BackupVerificationError,
    DrillFailed,
    RestoreLoadError,
    StorageError,
    VibeOpsError,
)
from tasks.form_fields import Duration, schema_pattern
from tasks.influx import delete_drill_bucket, read_influx_drill_markers
from tasks.manifest import SOURCE_NAME, BackupManifest
from tasks.mongo import drop_drill_database, read_mongo_drill_markers
from tasks.object_diff import markdown_code, markdown_text, object_report_lines
from tasks.physical import find_leftover_servers, remove_leftover_server, scratch_servers_root
from tasks.pitr_restore import (
    ChainProof,
    ReplayOutcome,
    SegmentChoice,
    choose_segments,
    proof_lines,
    prove_chain_task,
    replay_lines,
    replay_task,
    restore_base_task,
)
from tasks.restore import (
    BackupSearch,
    RestoreStats,
    RestoreTarget,
    find_backup,
    keep_scratch,
    list_drill_databases,
    prepare_scratch_target,
    restore_copy,
    teardown_scratch,
    teardown_scratch_server,
)
from tasks.storage import open_store
from tasks.validation import (
    DEFAULT_EXPECTATIONS,
    ValidationReport,
    load_expectations,
    validate_restore,
)

HISTORY_ROWS = 20


def default_history_path() -> Path:
    """`$VIBEOPS_HOME/drills/history.jsonl`: the file the metrics exporter reads."""
    return history_file(vibeops_home())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "default"


class RestoreDrillParams(DrillSelection):
    """Parameters of restore-drill (rendered as a form in the Prefect UI)."""

    source: str = Field(
        default="vibebench",
        description="Logical source name: restores mysql/{source}/ backups.",
        json_schema_extra=schema_pattern(SOURCE_NAME),
    )
    drill_server_block: str = Field(
        default="",
        description="Name of a 'VibeOps MySQL Connection' block for the drill server; empty = "
        "the local server (the same one the source runs on).",
    )
    keep_hours: int = Field(
        default=0,
        ge=0,
        le=168,
        description="Keep the restored copy this many hours for inspection (0 = drop at once).",
    )
    load_connections: int = Field(
        default=2, ge=1, le=16, description="Connections loading rows in parallel (1 = single)."
    )
    expectations_file: str = Field(
        default=DEFAULT_EXPECTATIONS,
        description="YAML expectation suite, relative to the project folder.",
    )
    prove_chain: bool = Field(
        default=False,
        description="Also restore the previous base, replay it to this base's position and "
        "compare every table's rows and CHECKSUM TABLE with this base's manifest (about doubles "
        "the drill's work; not counted in the RTO).",
    )
    replay_binlogs: bool = Field(
        default=True,
        description="Replay the archived binlogs after the base (on a throwaway server) so the "
        "RPO is measured to the last replayed event; off = the base backup alone.",
    )


@dataclass
class _Drill:
    """What the drill learned, for the report, the history and the events."""

    params: RestoreDrillParams
    started: datetime
    targets: DrillTargets
    search: BackupSearch | None = None
    scratch: str | None = None
    attempts: list[CopyAttempt] = field(default_factory=list)
    stats: RestoreStats | None = None
    validation: ValidationReport | None = None
    phases: dict[str, float] = field(default_factory=dict)
    validated_at: datetime | None = None
    problems: list[str] = field(default_factory=list)
    scratch_fate: str = "not created"
    engine_rto: list[EngineRto] = field(default_factory=list)
    replay: ReplayOutcome | None = None
    proof: ChainProof | None = None
    chain: SegmentChoice | None = None

    @property
    def manifest(self) -> BackupManifest | None:
        return self.search.choice.manifest if self.search and self.search.choice else None

    @property
    def restored_from(self) -> str | None:
        return next((a.region for a in self.attempts if a.outcome == "restored"), None)


@flow(
    name="restore-drill",
    flow_run_name=run_name("restore-drill-{source}"),
    description="Restore the newest backup into a scratch database, validate it, measure RTO/RPO.",
    timeout_seconds=8 * 3600,
)
@form(RestoreDrillParams)
def restore_drill(params: RestoreDrillParams) -> DrillRecord:
    """Prove that a backup restores within the RTO and that it is recent enough for the RPO.

    Returns:
        The drill's history record.

    Raises:
        RestoreTargetRefused: the scratch database would be the source (before any work).
        DrillFailed: validation failed or a target was missed (after the report).
    """
    logger = get_run_logger()
    # Refusals and configuration first: nothing is read or written before these pass.
    if params.scratch_database:
        check_scratch_target(params.scratch_database, [params.source])
    suite = load_expectations(params.expectations_file)
    server = resolve_mysql(params.drill_server_block)
    protected = [params.source, server.database]
    if params.scratch_database:
        check_scratch_target(params.scratch_database, protected)
    stores = {d.region: open_store(d) for d in resolve_store(params.store_block).destinations}
    order = region_try_order(list(stores), params.prefer_region or None)
    # The recovery clock starts once the configuration is known good: an incident pays for
    # finding, restoring and validating the backup, not for loading this drill's suite.
    started = datetime.now(UTC)
    drill = _Drill(params, started, DrillTargets(rto=params.rto_target, rpo=params.rpo_target))
    owned = False
    kept_until: datetime | None = None
    target: RestoreTarget | None = None
    try:
        with tags(f"db:{server.host}:{server.port}", "restore-drill"):
            clock = time.perf_counter()
            drill.search = find_backup(stores, order, params.source, params.backup)
            drill.phases["find"] = time.perf_counter() - clock
            manifest = drill.manifest
            if manifest is None:
                raise DrillFailed(
                    f"no committed backup of {params.source!r} matching {params.backup!r} in "
                    f"the reachable regions {[r for r in order if r not in drill.search.unreachable]}"
                )
            protected.append(manifest.database)
            drill.scratch = params.scratch_database or scratch_database_name(
                params.source, manifest.backup_id
            )
            check_scratch_target(drill.scratch, protected)
            marker = DrillMarker(
                drill_run=str(flow_run.get_id() or "local"),
                source=params.source,
                backup_id=manifest.backup_id,
                created_at=datetime.now(UTC),
            )
            regions = list(drill.search.choice.regions)  # type: ignore[union-attr]
            if params.replay_binlogs and manifest.gtid:
                drill.chain = choose_segments(stores, regions, manifest)
            if drill.chain and drill.chain.segments:
                # Replay needs the database under its own name: a throwaway server, never
                # a renamed scratch database on the drill server (the rename trap).
                clock = time.perf_counter()
                base = restore_base_task(
                    manifest, stores, regions, drill.scratch, [server.port], params.load_connections
                )
                target = RestoreTarget(
                    "scratch-server", base.connection, manifest.database, base.server
                )
                drill.phases["prepare"] = base.server_s
                for region, why in base.failed.items():
                    _record_failed_copy(drill, region, BackupVerificationError(why), 0.0)
                drill.stats = base.stats
                drill.attempts.append(
                    CopyAttempt(
                        base.region,
                        "restored",
                        objects=base.stats.objects,
                        seconds=time.perf_counter() - clock,
                    )
                )
                regions = []
            for region in regions:
                clock = time.perf_counter()
                try:
                    with transaction():
                        target = prepare_scratch_target(
                            server,
                            drill.scratch,
                            marker,
                            protected,
                            manifest.engine,
                            manifest.database,
                            manifest.database_charset,
                            manifest.database_collation,
                        )
                        owned = target.kind == "scratch-database"
                        prepared = time.perf_counter()
                        stats = restore_copy(
                            manifest, stores[region], target, params.load_connections
                        )
                except (BackupVerificationError, StorageError, RestoreLoadError) as exc:
                    _record_failed_copy(drill, region, exc, time.perf_counter() - clock)
                    if isinstance(exc, RestoreLoadError):
                        break  # the copy matches the manifest: every region holds the same bytes
                    continue
                drill.phases["prepare"] = prepared - clock
                drill.stats = stats
                drill.attempts.append(
                    CopyAttempt(region, "restored", objects=stats.objects, seconds=stats.seconds)
                )
                break
            if drill.stats is None or target is None:
                raise DrillFailed("no region's copy could be restored")
            clock = time.perf_counter()
            drill.validation = validate_restore(
                target.connection, target.database, manifest, suite, params.load_connections
            )
            drill.phases["validate"] = time.perf_counter() - clock
            drill.problems += drill.validation.problems
            if drill.chain and drill.chain.segments and drill.validation.ok:
                clock = time.perf_counter()
                drill.replay = replay_task(
                    manifest, drill.chain.segments, stores, order, target.connection
                )
                drill.phases["replay"] = time.perf_counter() - clock
            drill.validated_at = datetime.now(UTC)
            if params.prove_chain:
                drill.proof = prove_chain_task(
                    manifest, stores, order, f"{drill.scratch}_proof", [server.port]
                )
                if drill.proof is not None and not drill.proof.ok:
                    drill.problems += [f"chain proof: {p}" for p in drill.proof.problems]
            if params.keep_hours and target.kind == "scratch-database":
                status = "passed" if drill.validation.ok else "failed"
                kept_until = keep_scratch(
                    server, drill.scratch, status, timedelta(hours=params.keep_hours)
                )
    except VibeOpsError as exc:
        drill.problems.append(
            str(exc) if isinstance(exc, DrillFailed) else f"{type(exc).__name__}: {exc}"
        )
        logger.error("drill failed: %s", exc)
    finally:
        if target is not None and target.scratch_server is not None:
            drill.scratch_fate = teardown_scratch_server(target)
        if owned and drill.scratch and kept_until is None:
            teardown_scratch(server, drill.scratch, owned=True)
            drill.scratch_fate = f"`{drill.scratch}` dropped"
        elif kept_until is not None:
            drill.scratch_fate = f"`{drill.scratch}` kept until {kept_until:%Y-%m-%d %H:%M} UTC (cleanup-drills drops it)"
    record, verdict = _publish(drill)
    if not verdict.passed:
        error = DrillFailed(
            f"restore drill of {params.source!r} failed: " + "; ".join(verdict.reasons)
        )
        error.record = record  # type: ignore[attr-defined]  # for callers printing RTO/RPO
        raise error
    return record


def _record_failed_copy(drill: _Drill, region: str, exc: Exception, seconds: float) -> None:
    outcome = failed_copy_outcome(exc)
    manifest = drill.manifest
    assert manifest is not None
    objects = re.findall(r"(?:gs|file)://\S+", str(exc)) or [
        f"{region}:{manifest.object_key(o.name)}" for o in manifest.objects
    ]
    objects = [o.rstrip(":,") for o in objects]
    drill.attempts.append(CopyAttempt(region, outcome, str(exc)[:600], objects, seconds))
    drill.phases["failed_attempts"] = drill.phases.get("failed_attempts", 0.0) + seconds
    get_run_logger().warning("region %s: %s copy: %s", region, outcome, exc)
    if outcome == "corrupt":
        emit_event(
            event="vibeops.drill.corrupt_copy",
            resource={
                "prefect.resource.id": f"vibeops.backup.mysql.{manifest.source}.{region}",
                "prefect.resource.name": f"{manifest.source} backup copy in {region}",
                "vibeops.region": region,
            },
            related=[_drill_resource(manifest.source) | {"prefect.resource.role": "drill"}],
            payload={
                "backup_id": manifest.backup_id,
                "region": region,
                "objects": objects,
                "error": str(exc)[:500],
            },
        )


def _drill_resource(source: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"vibeops.drill.mysql.{source}",
        "prefect.resource.name": f"restore drill of {source}",
    }


def _publish(drill: _Drill) -> tuple[DrillRecord, Verdict]:
    """Verdict, history record, artifacts and the passed/failed event."""
    params, manifest = drill.params, drill.manifest
    finished = datetime.now(UTC)
    rto = (
        drill.validated_at - drill.started
        if drill.validated_at and drill.validation and drill.validation.ok
        else None
    )
    reached = drill.replay.result.point_at if drill.replay else None
    rpo = rpo_of(drill.started, reached or manifest.consistent_at) if manifest else None
    verdict = judge(drill.targets, rto, rpo, drill.problems)
    stats = drill.stats
    phases = dict(drill.phases)
    if stats:
        phases.update(download=stats.download_s, decompress=stats.decompress_s, load=stats.load_s)
    record = DrillRecord(
        source=params.source,
        flow_run_id=str(flow_run.get_id() or ""),
        flow_run_name=flow_run.get_name(),
        backup_id=manifest.backup_id if manifest else None,
        engine=manifest.engine if manifest else None,
        region=drill.restored_from,
        corrupt_regions=[a.region for a in drill.attempts if a.outcome == "corrupt"],
        unreachable_regions=sorted(
            {a.region for a in drill.attempts if a.outcome == "unreachable"}
            | set(drill.search.unreachable if drill.search else {})
        ),
        started_at=drill.started,
        finished_at=finished,
        rto_seconds=rto.total_seconds() if rto else None,
        rpo_seconds=rpo.total_seconds() if rpo is not None else None,
        rto_target_seconds=params.rto_target.total_seconds(),
        rpo_target_seconds=params.rpo_target.total_seconds(),
        passed=verdict.passed,
        reasons=list(verdict.reasons),
        rows=manifest.total_rows if manifest else None,
        bytes=stats.compressed_bytes if stats else None,
        phases={k: round(v, 3) for k, v in phases.items()},
    )
    path = default_history_path()
    append_history(path, record)
    drill.engine_rto = rto_by_engine(read_history(path, params.source))
    slug = _slug(params.source)
    create_markdown_artifact(
        key=f"restore-drill-{slug}",
        markdown=_report(drill, verdict, record, rto, rpo, phases),
        description=f"restore-drill {verdict.label}",
    )
    create_table_artifact(
        key=f"restore-drill-history-{slug}",
        table=[_history_row(r) for r in reversed(read_history(path, params.source, HISTORY_ROWS))],
        description=f"Last {HISTORY_ROWS} restore drills of {params.source} (newest first)",
    )
    emit_event(
        event=f"vibeops.drill.{'passed' if verdict.passed else 'failed'}",
        resource=_drill_resource(params.source),
        payload={
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
        "restore drill %s: RTO %s (target %s), RPO %s (target %s)%s",
        verdict.label,
        format_duration(rto),
        format_duration(params.rto_target),
        format_duration(rpo),
        format_duration(params.rpo_target),
        "" if verdict.passed else " - " + "; ".join(verdict.reasons),
    )
    return record, verdict


def _history_row(r: DrillRecord) -> dict[str, str]:
    return {
        "started (UTC)": f"{r.started_at:%Y-%m-%d %H:%M}",
        "verdict": "PASSED" if r.passed else "FAILED",
        "backup": r.backup_id or "-",
        "region": r.region or "-",
        "engine": r.engine or "mysqldump",
        "RTO s": f"{r.rto_seconds:.1f}" if r.rto_seconds is not None else "-",
        "RPO s": f"{r.rpo_seconds:.0f}" if r.rpo_seconds is not None else "-",
        "targets s": f"{r.rto_target_seconds:.0f} / {r.rpo_target_seconds:.0f}",
        "corrupt copies": ", ".join(r.corrupt_regions) or "-",
        "reason": (r.reasons[0][:120] if r.reasons else ""),
    }


def _mark(ok: bool, yes: str = "met", no: str = "MISSED") -> str:
    """A state as a word (readable without an emoji font), then its emoji."""
    return f"{yes} ✅" if ok else f"{no} ❌"


def _report(
    drill: _Drill,
    verdict: Verdict,
    record: DrillRecord,
    rto: timedelta | None,
    rpo: timedelta | None,
    phases: dict[str, float],
) -> str:
    params, manifest, stats = drill.params, drill.manifest, drill.stats
    lines = [
        f"# Restore drill of `{params.source}`: {_mark(verdict.passed, 'PASSED', 'FAILED')}",
        "",
        "| objective | measured | target | met |",
        "|---|---|---|---|",
        f"| RTO (start to validated restore) | {format_duration(rto)} | "
        f"{format_duration(params.rto_target)} | {_mark(rto is not None and rto <= params.rto_target)} |",
        f"| RPO (start minus {'last replayed event' if drill.replay else 'backup' + chr(39) + 's consistent point'}) | {format_duration(rpo)} | "
        f"{format_duration(params.rpo_target)} | {_mark(rpo is not None and rpo <= params.rpo_target)} |",
        "",
    ]
    if verdict.reasons:
        lines += ["**Why it failed**", "", *[f"- {markdown_text(r)}" for r in verdict.reasons], ""]
    if manifest:
        lines += [
            f"Backup `{manifest.backup_id}` ({manifest.engine}, {manifest.codec}), consistent at "
            f"{manifest.consistent_at:%Y-%m-%d %H:%M:%S} UTC: {len(manifest.tables)} tables, "
            f"{manifest.total_rows:,} rows, {manifest.total_size / 1e6:,.1f} MB.",
            "",
        ]
    lines += replay_lines(drill.replay, drill.chain.gap if drill.chain else None)
    lines += proof_lines(drill.proof)
    if drill.search and drill.search.choice and drill.search.choice.skipped:
        lines += [
            "Newer backups skipped (no readable manifest: interrupted or uncommitted): "
            + ", ".join(f"`{b}`" for b in drill.search.choice.skipped),
            "",
        ]
    if drill.attempts or (drill.search and drill.search.unreachable):
        lines += ["## Regions", "", "| region | outcome | detail |", "|---|---|---|"]
        for region, error in (drill.search.unreachable if drill.search else {}).items():
            lines.append(f"| {region} | unreachable (listing) ⚠️ | {_cell(error)} |")
        for attempt in drill.attempts:
            flag = "" if attempt.outcome == "restored" else " ⚠️"
            lines.append(
                f"| {attempt.region} | {attempt.outcome}{flag} | "
                f"{_cell(attempt.detail or ', '.join(attempt.objects))} |"
            )
        if record.corrupt_regions or record.unreachable_regions:
            lines += [
                "",
                f"Fell back to region `{record.region}`."
                if record.region
                else "No region's copy was usable.",
            ]
        lines.append("")
    if stats and manifest and manifest.engine != "mysqldump":
        lines += [_engine_restore_line(manifest, stats), ""]
    elif stats:
        lines += [
            f"Loaded {stats.uncompressed_bytes / 1e6:,.1f} MB of SQL ({stats.statements:,} statements) "
            f"over {stats.connections} connection(s)"
            + (", binary log skipped for the scratch load" if stats.binlog_skipped else "")
            + ".",
            "",
        ]
        if stats.ignored_statements:
            lines += [
                "Ignored database-switching statements: "
                + ", ".join(f"`{s}`" for s in stats.ignored_statements[:5]),
                "",
            ]
    if rto is not None or drill.validated_at:
        total = (drill.validated_at or datetime.now(UTC)) - drill.started
        breakdown = rto_breakdown(drill.started, drill.started + total, phases)
        lines += ["## Time to recover", "", "| phase | seconds | share |", "|---|---|---|"]
        lines += [
            f"| {n} | {s:.2f} | {share:.0%} |" for n, s, share in breakdown.rows() if s > 0.0005
        ]
        lines.append("")
    if drill.validation:
        lines += [
            "## Table parity (manifest vs restored)",
            "",
            "| table | rows (backup) | rows (restored) | checksum (backup) | checksum (restored) | ok |",
            "|---|---|---|---|---|---|",
        ]
        for p in drill.validation.parity:
            lines.append(
                f"| {markdown_code(p.table)} | {_num(p.expected_rows)} | {_num(p.actual_rows)} | "
                f"{p.expected_checksum if p.expected_checksum is not None else '-'} | "
                f"{p.actual_checksum if p.actual_checksum is not None else '-'} | "
                f"{_mark(p.ok, 'same', 'DIFFERENT')}{' ' + p.problem if p.problem else ''} |"
            )
        objects = drill.validation.objects
        lines += ["", *object_report_lines(objects.differences, objects.checked, objects.unchecked)]
        expectations = sorted(
            drill.validation.expectations, key=lambda e: (e.success, bool(e.skipped), e.table)
        )
        lines += [
            "",
            "## Expectations",
            "",
            "| table | expectation | result | detail |",
            "|---|---|---|---|",
        ]
        for e in expectations:
            result = "skipped" if e.skipped else ("passed" if e.success else "FAILED ❌")
            args = ", ".join(f"{k}={v}" for k, v in e.kwargs.items())
            lines.append(
                f"| {markdown_code(e.table)} | `{e.expectation}`({_cell(args)}) | {result} | {_cell(e.skipped or e.observed)} |"
            )
        lines.append("")
    lines += engine_rto_lines(drill.engine_rto)
    scratch_kind = "Throwaway server" if "throwaway" in drill.scratch_fate else "Scratch database"
    lines.append(f"{scratch_kind}: {drill.scratch_fate}.")
    return "\n".join(lines)


def _engine_restore_line(manifest: BackupManifest, stats: RestoreStats) -> str:
    if manifest.engine == "physical":
        return (
            f"Extracted {stats.uncompressed_bytes / 1e6:,.1f} MB of data files, prepared them and "
            "started a throwaway server on them (validated there, then stopped and deleted)."
        )
    return (
        f"Extracted {stats.uncompressed_bytes / 1e6:,.1f} MB of mydumper files "
        f"({stats.statements:,} files) and loaded them with myloader over "
        f"{stats.connections} thread(s), binary log skipped."
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def _num(value: int | None) -> str:
    return f"{value:,}" if value is not None else "-"


# -- cleanup -----------------------------------------------------------------------------------


MONGO_ITEM = "mongodb database"
DEBRIS_ITEM = "incomplete backup"
INFLUX_ITEM = "influxdb bucket"


class CleanupDrillsParams(BaseModel):
    """Parameters of cleanup-drills (rendered as a form in the Prefect UI)."""

    drill_server_block: str = Field(
        default="", description="Drill server block; empty = the local server."
    )
    mongo_connection_block: str | None = Field(
        default=None,
        description="'VibeOps MongoDB Connection' block whose leftover drill databases to drop; "
        "unset = skip MongoDB, empty = VIBEOPS_MONGO_* environment.",
    )
    influx_connection_block: str | None = Field(
        default=None,
        description="'VibeOps InfluxDB Connection' block whose leftover drill buckets to delete; "
        "unset = skip InfluxDB, empty = VIBEOPS_INFLUX_* environment.",
    )
    stale_after: Duration = Field(
        default=timedelta(hours=12),
        ge=timedelta(hours=9),
        description="Drop unkept drill databases and buckets, and this worker's throwaway-server "
        "folders, older than this (left by crashed drills; a drill runs at most 8 h).",
    )
    force_drop: list[str] = Field(
        default_factory=list,
        description="Drill databases or buckets (with a drill marker) to drop now, even inside "
        "a keep window.",
    )
    store_block: str | None = Field(
        default=None,
        description="BackupStore block whose incomplete backups (crashed runs: unfinished "
        "uploads, folders without a manifest) to remove once their last write is older than "
        "stale_after; unset = skip, empty = the local default folders.",
    )
    dry_run: bool = Field(default=True, description="Only report what would be dropped.")


@flow(
    name="cleanup-drills",
    flow_run_name=run_name("cleanup-drills"),
    description="Drop scratch databases of restore drills whose keep window is over, leftover "
    "MongoDB/InfluxDB drill targets (opt-in), and throwaway servers that crashed physical "
    "drills left on this worker.",
    timeout_seconds=3600,
)
@form(CleanupDrillsParams)
def cleanup_drills(params: CleanupDrillsParams) -> list[CleanupItem]:
    """Drop expired or abandoned drill databases and buckets (never one without a marker)."""
    server = resolve_mysql(params.drill_server_block)
    mongo = (
        None
        if params.mongo_connection_block is None
        else resolve_mongo(params.mongo_connection_block, field="mongo_connection_block")
    )
    influx = (
        None
        if params.influx_connection_block is None
        else resolve_influx(params.influx_connection_block)
    )
    now = datetime.now(UTC)
    with tags(f"db:{server.host}:{server.port}", "restore-drill"):
        existing = list_drill_databases(server)
        plan = plan_cleanup(existing, now, params.stale_after, params.force_drop)
        mongo_markers = read_mongo_drill_markers(mongo) if mongo else {}
        plan += plan_cleanup(
            mongo_markers, now, params.stale_after, params.force_drop, what=MONGO_ITEM
        )
        influx_markers = read_influx_drill_markers(influx) if influx else {}
        plan += plan_cleanup(
            influx_markers, now, params.stale_after, params.force_drop, what=INFLUX_ITEM
        )
        debris_stores = (
            {}
            if params.store_block is None
            else {d.region: open_store(d) for d in resolve_store(params.store_block).destinations}
        )
        debris = [
            found
            for store in debris_stores.values()
            for found in find_debris(store, now, params.stale_after)
        ]
        plan += [CleanupItem(d.name, d.stale, d.reason, what=DEBRIS_ITEM) for d in debris]
        leftovers = find_leftover_servers(scratch_servers_root(), now, params.stale_after)
        plan += [
            CleanupItem(str(s.workdir), True, s.describe(), what="server folder") for s in leftovers
        ]
        dropped = []
        if not params.dry_run:
            for item in plan:
                if not item.drop:
                    continue
                if item.what == "database":
                    done = teardown_scratch(server, item.database, owned=False)
                elif item.what == MONGO_ITEM and mongo is not None:
                    marker = mongo_markers[item.database]
                    done = marker is not None and drop_drill_database(mongo, item.database, marker)
                elif item.what == INFLUX_ITEM and influx is not None:
                    marker = influx_markers[item.database]
                    done = marker is not None and delete_drill_bucket(influx, item.database, marker)
                else:
                    continue
                if done:
                    dropped.append(item.database)
            for leftover in leftovers:
                remove_leftover_server(leftover)
                dropped.append(str(leftover.workdir))
            for stale in (d for d in debris if d.stale):
                remove_debris(debris_stores[stale.region], stale)
                dropped.append(stale.name)
    mode = "dry run: nothing dropped" if params.dry_run else f"dropped {len(dropped)}"
    where = [f"{server.host}:{server.port}"]
    where += [f"MongoDB {mongo.host}:{mongo.port}"] if mongo else []
    where += [f"InfluxDB {influx.url}"] if influx else []
    where += [f"backup regions {', '.join(debris_stores)}"] if debris_stores else []
    lines = [
        f"# Drill cleanup on {', '.join(where)} ({mode})",
        "",
        "| what | name | action | reason |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {i.what} | {i.database} | {'drop' if i.drop else 'keep'}{' (dry run)' if i.drop and params.dry_run else ''} | {i.reason} |"
        for i in plan
    ] or ["| - | - | - | no drill databases, buckets or server folders |"]
    create_markdown_artifact(key="cleanup-drills", markdown="\n".join(lines), description=mode)
    emit_event(
        event="vibeops.drill.cleanup",
        resource={
            "prefect.resource.id": f"vibeops.drill-server.{server.host}.{server.port}",
            "prefect.resource.name": f"drill server {server.host}:{server.port}",
        },
        payload={
            "dry_run": params.dry_run,
            "dropped": dropped,
            "planned": [i.database for i in plan if i.drop],
            "items": [
                {"what": i.what, "name": i.database, "drop": i.drop, "reason": i.reason}
                for i in plan
            ],
            "stores": where,
        },
    )
    return plan
