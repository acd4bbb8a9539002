"""backup-mysql: a consistent dump, compressed once, streamed to every region, verified, committed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from pydantic import BaseModel, Field, field_validator

from blocks.defaults import resolve_mysql, resolve_store
from flows.forms import form
from flows.run_names import run_name
from tasks.backup import build_manifest, commit_manifest, preflight, stream_dump, verify_backup
from tasks.backup_stream import RegionCheck
from tasks.engines import resolve_engine
from tasks.form_fields import MARIADB_IDENTIFIER, schema_pattern
from tasks.manifest import (
    SOURCE_NAME,
    BackupManifest,
    backup_prefix,
    new_backup_id,
    validate_source_name,
)
from tasks.mysql import quote_identifier
from tasks.storage import open_store


class BackupMySQLParams(BaseModel):
    """Parameters of backup-mysql (rendered as a form in the Prefect UI)."""

    source: str = Field(
        default="vibebench",
        description="Logical name of the source; backups go under mysql/{source}/ in every region.",
        json_schema_extra=schema_pattern(SOURCE_NAME),
    )
    database: str = Field(
        default="vibebench",
        description="Database to back up (1-64 characters, not ending with a space).",
        json_schema_extra=schema_pattern(MARIADB_IDENTIFIER),
    )
    connection_block: str = Field(
        default="",
        description="Name of a 'VibeOps MySQL Connection' block; empty = local 127.0.0.1:3306.",
    )
    store_block: str = Field(
        default="",
        description="Name of a 'VibeOps Backup Store' block; empty = two local folders.",
    )
    codec: Literal["zstd", "gzip"] = Field(
        default="zstd", description="zstd (fast, multi-threaded) or gzip (seed-compatible)."
    )
    compression_level: int = Field(
        default=3, ge=1, le=19, description="Compression level (zstd 1-19, gzip 1-9)."
    )
    record_checksums: bool = Field(
        default=True,
        description="Record CHECKSUM TABLE per table in the manifest (restore drills compare them).",
    )
    engine: Literal["default", "mysqldump", "mydumper", "physical"] = Field(
        default="default",
        description="Backup engine: 'default' = the connection block's backup_engine; "
        "mysqldump (portable, managed servers), mydumper (parallel logical: faster restores), "
        "physical (mariadb-backup / xtrabackup: fastest restores; needs the database host).",
    )
    threads: int = Field(
        default=2, ge=1, le=32, description="Worker threads of mydumper and mariadb-backup."
    )
    chunk_rows: int = Field(
        default=100_000,
        ge=1_000,
        le=10_000_000,
        description="mydumper: rows per chunk file (myloader loads chunks in parallel).",
    )

    @field_validator("source")
    @classmethod
    def _source_name(cls, value: str) -> str:
        return validate_source_name(value)

    @field_validator("database")
    @classmethod
    def _database_name(cls, value: str) -> str:
        quote_identifier(value)
        return value


def snapshot_proof_text(hints: dict[str, str | int]) -> str:
    """How the row counts/checksums were proven to match the dump (for the summary)."""
    if "exact_snapshot" not in hints:
        return "-"
    if hints["exact_snapshot"]:
        return f"yes, by {hints.get('exact_by', '-')} (global lock {hints.get('global_lock_ms', 0)} ms)"
    return f"no: {str(hints.get('inexact_reason', '-')).replace('|', '/')}"


def _summary(manifest: BackupManifest, checks: list, seconds: float) -> str:
    data = manifest.objects[0]
    lines = [
        f"# Backup `{manifest.backup_id}` of `{manifest.database}` — committed",
        "",
        "| fact | value |",
        "|---|---|",
        f"| source | `{manifest.source}` ({manifest.server_version}) |",
        f"| engine | {manifest.engine} ({manifest.tool_versions.get('dump', '-')}) |",
        f"| consistent at | {manifest.consistent_at:%Y-%m-%d %H:%M:%S} UTC |",
        f"| binlog | {manifest.binlog_file or '-'}:{manifest.binlog_position or '-'} "
        f"GTID {manifest.gtid or '-'} |",
        f"| facts exact | {snapshot_proof_text(manifest.restore_hints)} |",
        f"| tables / rows | {len(manifest.tables)} / {manifest.total_rows:,} |",
        f"| size | {data.size / 1e6:,.1f} MB {manifest.codec} "
        f"(from {(data.uncompressed_size or 0) / 1e6:,.1f} MB) |",
        f"| sha256 | `{data.sha256}` |",
        f"| duration | {seconds:.1f} s |",
    ]
    return "\n".join(lines + region_rows(checks))


def region_rows(checks: list[RegionCheck]) -> list[str]:
    """The report's table of verified copies, one row per region."""
    return [
        "",
        "| region | object | verified |",
        "|---|---|---|",
        *[
            f"| {c.region} | {c.uri} | size+sha256{' + full decompress' if c.decompressed else ''} |"
            for c in checks
        ],
    ]


def backup_resource(kind: str, source: str) -> dict[str, str]:
    """The Prefect event resource of one source's backups."""
    return {
        "prefect.resource.id": f"vibeops.backup.{kind}.{source}",
        "prefect.resource.name": source,
    }


def backup_artifact_key(kind: str, source: str) -> str:
    """`backup-<kind>-<source>` in the characters artifact keys allow."""
    return f"backup-{kind}-{source.replace('_', '-').replace('.', '-').lower()}"


def publish_backup_failure(
    kind: str,
    source: str,
    database: str,
    backup_id: str,
    exc: Exception,
    payload: dict[str, str],
) -> None:
    """The failed event and the FAILED report of a backup that wrote no manifest."""
    emit_event(
        event="vibeops.backup.failed",
        resource=backup_resource(kind, source),
        payload={
            "backup_id": backup_id,
            **payload,
            "error": type(exc).__name__,
            "message": str(exc)[:500],
        },
    )
    create_markdown_artifact(
        key=backup_artifact_key(kind, source),
        markdown=f"# Backup `{backup_id}` of `{database}` ({kind}) — FAILED\n\n"
        f"`{type(exc).__name__}`: {exc}\n\nNo manifest was written: nothing to restore "
        "from this run.",
        description=f"backup-{kind} result",
    )


@flow(
    name="backup-mysql",
    flow_run_name=run_name("backup-mysql-{source}"),
    description="Dump MySQL consistently, compress, stream to every region, verify, commit.",
    timeout_seconds=6 * 3600,
)
@form(BackupMySQLParams)
def backup_mysql(params: BackupMySQLParams) -> BackupManifest:
    """Back up one MySQL database into every region of the backup store.

    Returns:
        The committed manifest.
    """
    logger = get_run_logger()
    started = datetime.now(UTC)
    conn = resolve_mysql(params.connection_block, params.database)
    engine = resolve_engine(params.engine, conn.backup_engine)
    store_block = resolve_store(params.store_block)
    stores = [open_store(d) for d in store_block.destinations]
    backup_id = new_backup_id(started)
    prefix = backup_prefix("mysql", params.source, backup_id)
    try:
        with tags(f"db:{conn.host}:{conn.port}"):
            facts = preflight(conn, params.database, stores, engine)
            dump = stream_dump(
                conn,
                params.database,
                facts,
                stores,
                prefix,
                params.codec,
                params.compression_level,
                params.record_checksums,
                engine,
                params.threads,
                params.chunk_rows,
            )
            checks = verify_backup(
                stores, f"{prefix}{dump.object_name}", dump.written, params.codec
            )
            manifest = build_manifest(
                backup_id=backup_id,
                source=params.source,
                database=params.database,
                source_facts=facts,
                dump=dump,
                codec=params.codec,
                stores=stores,
                started_at=started,
            )
            commit_manifest(stores, manifest)
    except Exception as exc:
        publish_backup_failure(
            "mysql", params.source, params.database, backup_id, exc, {"engine": engine}
        )
        raise
    seconds = (manifest.finished_at - started).total_seconds()
    create_markdown_artifact(
        key=backup_artifact_key("mysql", params.source),
        markdown=_summary(manifest, checks, seconds),
        description="backup-mysql result",
    )
    emit_event(
        event="vibeops.backup.succeeded",
        resource=backup_resource("mysql", params.source),
        payload={
            "backup_id": manifest.backup_id,
            "engine": manifest.engine,
            "database": manifest.database,
            "consistent_at": manifest.consistent_at.isoformat(),
            "size_bytes": manifest.total_size,
            "rows": manifest.total_rows,
            "codec": manifest.codec,
            "regions": [r.uri for r in manifest.regions],
            "duration_s": round(seconds, 2),
        },
    )
    logger.info("backup %s committed in %d region(s)", manifest.backup_id, len(stores))
    return manifest
