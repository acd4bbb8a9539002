"""backup-mongodb: one database as a framed archive, compressed once, streamed to every region,
verified, committed by its manifest (the same data path as backup-mysql)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from pydantic import BaseModel, Field, field_validator

from blocks.defaults import resolve_mongo, resolve_store
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
from tasks.manifest import (
    SOURCE_NAME,
    BackupManifest,
    backup_prefix,
    new_backup_id,
    validate_source_name,
)
from tasks.mongo import build_mongo_manifest, preflight_mongo, stream_mongo_dump
from tasks.mongo_archive import MONGO_DATABASE_NAME, validate_database_name
from tasks.storage import open_store


class BackupMongoDBParams(BaseModel):
    """Parameters of backup-mongodb (rendered as a form in the Prefect UI)."""

    source: str = Field(
        default="vibebench",
        description="Logical name of the source; backups go under mongodb/{source}/ in every region.",
        json_schema_extra=schema_pattern(SOURCE_NAME),
    )
    database: str = Field(
        default="vibebench",
        description='MongoDB database to back up (1-63 characters, none of / \\ . space " $ * : | ?).',
        json_schema_extra=schema_pattern(MONGO_DATABASE_NAME),
    )
    connection_block: str = Field(
        default="",
        description="Name of a 'VibeOps MongoDB Connection' block; empty = local 127.0.0.1:27017.",
    )
    store_block: str = Field(
        default="",
        description="Name of a 'VibeOps Backup Store' block; empty = two local folders.",
    )
    codec: Literal["zstd", "gzip"] = Field(default="zstd", description="zstd (fast) or gzip.")
    compression_level: int = Field(default=3, ge=1, le=19, description="Compression level.")
    batch_size: int = Field(
        default=1000, ge=10, le=100_000, description="Documents per cursor batch while dumping."
    )

    @field_validator("source")
    @classmethod
    def _source_name(cls, value: str) -> str:
        return validate_source_name(value)

    @field_validator("database")
    @classmethod
    def _database_name(cls, value: str) -> str:
        return validate_database_name(value)


def _summary(manifest: BackupManifest, checks: list[RegionCheck], seconds: float) -> str:
    data = manifest.objects[0]
    lines = [
        f"# MongoDB backup `{manifest.backup_id}` of `{manifest.database}` — committed",
        "",
        "| fact | value |",
        "|---|---|",
        f"| source | `{manifest.source}` (MongoDB {manifest.server_version}) |",
        f"| consistent at | {manifest.consistent_at:%Y-%m-%d %H:%M:%S} UTC (per collection) |",
        f"| collections / documents | {len(manifest.tables)} / {manifest.total_rows:,} |",
        f"| size | {data.size / 1e6:,.1f} MB {manifest.codec} "
        f"(from {(data.uncompressed_size or 0) / 1e6:,.1f} MB) |",
        f"| sha256 | `{data.sha256}` |",
        f"| duration | {seconds:.1f} s |",
        "",
        "| collection | documents | content sha256 |",
        "|---|---:|---|",
        *[f"| {n} | {t.rows:,} | `{(t.sha256 or '')[:16]}…` |" for n, t in manifest.tables.items()],
    ]
    return "\n".join(lines + region_rows(checks))


@flow(
    name="backup-mongodb",
    flow_run_name=run_name("backup-mongodb-{source}"),
    description="Dump one MongoDB database, compress, stream to every region, verify, commit.",
    timeout_seconds=6 * 3600,
)
@form(BackupMongoDBParams)
def backup_mongodb(params: BackupMongoDBParams) -> BackupManifest:
    """Back up one MongoDB database into every region of the backup store.

    Returns:
        The committed manifest.
    """
    started = datetime.now(UTC)
    conn = resolve_mongo(params.connection_block, params.database)
    stores = [open_store(d) for d in resolve_store(params.store_block).destinations]
    backup_id = new_backup_id(started)
    prefix = backup_prefix("mongodb", params.source, backup_id)
    try:
        with tags(f"db:{conn.host}:{conn.port}"):
            facts = preflight_mongo(conn, params.database, stores)
            dump = stream_mongo_dump(
                conn,
                params.database,
                facts,
                stores,
                prefix,
                params.codec,
                params.compression_level,
                params.batch_size,
            )
            checks = verify_backup(
                stores, f"{prefix}{dump.object_name}", dump.written, params.codec
            )
            manifest = build_mongo_manifest(
                backup_id=backup_id,
                source=params.source,
                database=params.database,
                prefix=prefix,
                facts=facts,
                dump=dump,
                codec=params.codec,
                stores=stores,
                started_at=started,
            )
            commit_manifest(stores, manifest)
    except Exception as exc:
        publish_backup_failure(
            "mongodb", params.source, params.database, backup_id, exc, {"kind": "mongodb"}
        )
        raise
    seconds = (manifest.finished_at - started).total_seconds()
    create_markdown_artifact(
        key=backup_artifact_key("mongodb", params.source),
        markdown=_summary(manifest, checks, seconds),
        description="backup-mongodb result",
    )
    emit_event(
        event="vibeops.backup.succeeded",
        resource=backup_resource("mongodb", params.source),
        payload={
            "kind": "mongodb",
            "backup_id": manifest.backup_id,
            "database": manifest.database,
            "consistent_at": manifest.consistent_at.isoformat(),
            "size_bytes": manifest.total_size,
            "documents": manifest.total_rows,
            "collections": len(manifest.tables),
            "codec": manifest.codec,
            "regions": [r.uri for r in manifest.regions],
            "duration_s": round(seconds, 2),
        },
    )
    get_run_logger().info("backup %s committed in %d region(s)", manifest.backup_id, len(stores))
    return manifest
