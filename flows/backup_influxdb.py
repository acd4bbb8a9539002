"""backup-influxdb: one bucket exported as line protocol, streamed to every region, committed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from pydantic import BaseModel, Field, field_validator

from blocks.defaults import resolve_store
from blocks.influx import resolve_influx
from flows.backup import (
    backup_artifact_key,
    backup_resource,
    publish_backup_failure,
    region_rows,
)
from flows.forms import form
from flows.run_names import run_name
from tasks.backup import commit_manifest, verify_backup
from tasks.backup_stream import RegionCheck
from tasks.form_fields import schema_pattern
from tasks.influx_backup import (
    KIND,
    build_influx_manifest,
    find_incremental_start,
    preflight_influx,
    stream_export,
)
from tasks.manifest import (
    SOURCE_NAME,
    BackupManifest,
    backup_prefix,
    new_backup_id,
    validate_source_name,
)
from tasks.storage import open_store


class BackupInfluxParams(BaseModel):
    """Parameters of backup-influxdb (rendered as a form in the Prefect UI)."""

    source: str = Field(
        default="vibebench-metrics",
        description="Logical source name; backups go under influxdb/{source}/ in every region.",
        json_schema_extra=schema_pattern(SOURCE_NAME),
    )
    bucket: str = Field(
        default="vibebench",
        description="InfluxDB bucket to back up (a user bucket: not starting with '_').",
        json_schema_extra=schema_pattern(r"^[^_\s].*$"),
    )
    connection_block: str = Field(
        default="",
        description="Name of a 'VibeOps InfluxDB Connection' block; empty = VIBEOPS_INFLUX_* "
        "environment (default http://127.0.0.1:8086).",
    )
    store_block: str = Field(
        default="", description="Name of a 'VibeOps Backup Store' block; empty = two local folders."
    )
    codec: Literal["zstd", "gzip"] = Field(default="zstd", description="Compression codec.")
    compression_level: int = Field(default=3, ge=1, le=19, description="Compression level.")
    window_seconds: int = Field(
        default=86_400,
        ge=60,
        le=31 * 86_400,
        description="Export window: one query per window bounds memory (default one day).",
    )
    mode: Literal["full", "incremental"] = Field(
        default="full",
        description="full: the whole bucket (the nightly base). incremental: only points stamped "
        "at or after the previous backup's consistent point minus overlap_seconds (hourly; "
        "needs a committed backup to follow; backfilled old timestamps wait for the next full).",
    )
    overlap_seconds: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="Incremental: re-export this much before the previous consistent point "
        "(points written late, clock skew).",
    )

    @field_validator("source")
    @classmethod
    def _source_name(cls, value: str) -> str:
        return validate_source_name(value)

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not value.strip() or value.startswith("_"):
            raise ValueError(f"bucket {value!r}: give a user bucket name (not empty, not _system)")
        return value


def _mode_line(manifest: BackupManifest) -> str:
    details = manifest.influxdb
    assert details is not None
    if details.mode == "full":
        return "full (base of the incrementals that follow)"
    return (
        f"incremental after `{details.previous_backup_id}` (base `{details.base_backup_id}`): "
        "points stamped from the range start on"
    )


def _summary(manifest: BackupManifest, checks: list[RegionCheck], seconds: float) -> str:
    data = manifest.objects[0]
    details = manifest.influxdb
    assert details is not None
    lines = [
        f"# Backup `{manifest.backup_id}` of bucket `{manifest.database}` — committed",
        "",
        "| fact | value |",
        "|---|---|",
        f"| source | `{manifest.source}` (InfluxDB {manifest.server_version}) |",
        f"| mode | {_mode_line(manifest)} |",
        f"| range | {details.start:%Y-%m-%d %H:%M:%S} to {details.stop:%Y-%m-%d %H:%M:%S} UTC |",
        f"| measurements / values | {len(manifest.tables)} / {manifest.total_rows:,} |",
        f"| size | {data.size / 1e6:,.2f} MB {manifest.codec} "
        f"(from {(data.uncompressed_size or 0) / 1e6:,.2f} MB line protocol) |",
        f"| sha256 | `{data.sha256}` |",
        f"| duration | {seconds:.1f} s |",
        "",
        "| measurement | values | sha256 (sorted lines) |",
        "|---|---:|---|",
    ]
    lines += [
        f"| `{name}` | {m.points:,} | `{m.sha256[:16]}…` |"
        for name, m in details.measurements.items()
    ]
    return "\n".join(lines + region_rows(checks))


@flow(
    name="backup-influxdb",
    flow_run_name=run_name("backup-influxdb-{source}"),
    description="Export an InfluxDB bucket as line protocol, compress, stream to every region, "
    "verify, commit.",
    timeout_seconds=6 * 3600,
)
@form(BackupInfluxParams)
def backup_influxdb(params: BackupInfluxParams) -> BackupManifest:
    """Back up one InfluxDB bucket into every region of the backup store.

    Returns:
        The committed manifest.
    """
    started = datetime.now(UTC)
    conn = resolve_influx(params.connection_block)
    stores = [open_store(d) for d in resolve_store(params.store_block).destinations]
    backup_id = new_backup_id(started)
    prefix = backup_prefix(KIND, params.source, backup_id)
    try:
        with tags(f"influx:{conn.url}"):
            chain = None
            if params.mode == "incremental":
                chain = find_incremental_start(
                    stores, params.source, params.bucket, params.overlap_seconds
                )
            facts = preflight_influx(
                conn, params.bucket, stores, started, chain.since if chain else None
            )
            export = stream_export(
                conn,
                facts,
                stores,
                prefix,
                params.codec,
                params.compression_level,
                params.window_seconds,
            )
            checks = verify_backup(
                stores, f"{prefix}{export.object_name}", export.written, params.codec
            )
            manifest = build_influx_manifest(
                backup_id=backup_id,
                source=params.source,
                conn=conn,
                facts=facts,
                export=export,
                codec=params.codec,
                stores=stores,
                started_at=started,
                window_seconds=params.window_seconds,
                chain=chain,
            )
            commit_manifest(stores, manifest)
    except Exception as exc:
        publish_backup_failure(KIND, params.source, params.bucket, backup_id, exc, {"kind": KIND})
        raise
    seconds = (manifest.finished_at - started).total_seconds()
    create_markdown_artifact(
        key=backup_artifact_key(KIND, params.source),
        markdown=_summary(manifest, checks, seconds),
        description="backup-influxdb result",
    )
    emit_event(
        event="vibeops.backup.succeeded",
        resource=backup_resource(KIND, params.source),
        payload={
            "backup_id": manifest.backup_id,
            "kind": KIND,
            "engine": manifest.engine,
            "bucket": manifest.database,
            "consistent_at": manifest.consistent_at.isoformat(),
            "size_bytes": manifest.total_size,
            "points": manifest.total_rows,
            "codec": manifest.codec,
            "mode": params.mode,
            "regions": [r.uri for r in manifest.regions],
            "duration_s": round(seconds, 2),
        },
    )
    get_run_logger().info("backup %s committed in %d region(s)", manifest.backup_id, len(stores))
    return manifest
