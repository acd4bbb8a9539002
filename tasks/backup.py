"""Prefect tasks of the MySQL backup: preflight, stream, verify, commit.

Each task wraps plain functions from tasks.mysql, tasks.backup_stream and tasks.storage.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from blocks.mysql import MySQLConnection
from tasks.backup_stream import RegionCheck, StreamResult, stream_to_stores, verify_copies
from tasks.compression import EXTENSIONS
from tasks.engine_io import stream_engine_backup, tool_error
from tasks.engine_shapes import check_engine_shapes
from tasks.engines import check_engine_tools
from tasks.errors import (
    DatabaseUnreachable,
    DestinationMissing,
    ExternalCommandError,
    StorageError,
)
from tasks.manifest import (
    BackupManifest,
    Codec,
    Engine,
    MydumperDetails,
    PhysicalDetails,
    RegionCopy,
    StoredObject,
    TableFacts,
    backup_prefix,
)
from tasks.mydumper import MydumperBackup
from tasks.mysql import ConsistentDump, SnapshotFacts, SourceFacts, read_source_facts, tool_version
from tasks.mysql_objects import read_object_catalog
from tasks.physical import PhysicalBackup, source_datadir
from tasks.storage import ObjectStore

TRANSIENT_HTTP = re.compile(r"\b(429|500|502|503|504)\b|Connection refused|timed out|reset by peer")


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: the database or a bucket briefly out of reach."""
    if isinstance(exc, DatabaseUnreachable):
        return True
    if isinstance(exc, DestinationMissing):
        return False
    if isinstance(exc, StorageError):
        return bool(TRANSIENT_HTTP.search(str(exc)) or TRANSIENT_HTTP.search(str(exc.__cause__)))
    return False


def retry_transient(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
    """retry_condition_fn: retry only transient failures."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


def io_task(name: str, retries: int, backoff: float):  # type: ignore[no-untyped-def]
    """An idempotent I/O task: uncached, retried with jittered backoff on transient errors only."""
    return task(
        cache_policy=NO_CACHE,
        name=name,
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=backoff),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_transient,
    )


@io_task("preflight-mysql-backup", retries=3, backoff=2)
def preflight(
    conn: MySQLConnection,
    database: str,
    stores: list[ObjectStore],
    engine: Engine = "mysqldump",
) -> SourceFacts:
    """Check the source, the engine's tools and every destination before anything is written.

    Refuses (ConfigurationError) a table shape the engine cannot round-trip (tasks.engine_shapes).
    """
    facts = read_source_facts(conn, database)
    facts.catalog = read_object_catalog(conn, database)
    check_engine_tools(engine, facts.server_version)
    check_engine_shapes(conn, database, engine)
    if engine == "physical":
        source_datadir(conn, database)
    for store in stores:
        store.check_ready()
    counts = facts.catalog.counts()
    if facts.binlog_warning:
        get_run_logger().warning("%s", facts.binlog_warning)
    get_run_logger().info(
        "source %s on %s:%s (%s): %s, ~%d MB; regions %s",
        database,
        conn.host,
        conn.port,
        facts.server_version,
        ", ".join(f"{n} {kind}(s)" for kind, n in counts.items()),
        facts.data_bytes // 1_000_000,
        ", ".join(s.region for s in stores),
    )
    return facts


def _dump_error(stderr: bytes, returncode: int, database: str) -> Exception:
    return tool_error("mysqldump", stderr, returncode, database)


class _Progress:
    """Throttled progress: a Prefect progress artifact and, on a terminal, a bar."""

    def __init__(self, expected_bytes: int, label: str, verb: str = "Dumping") -> None:
        self.expected = max(expected_bytes, 1)
        self.last = 0.0
        self.artifact_id = create_progress_artifact(progress=0.0, description=f"{verb} {label}")
        self.bar = None
        if sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            self.bar_task = self.bar.add_task(f"dump {label}", total=self.expected)

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < 1.0:
            return
        self.last = now
        percent = min(99.0, 100.0 * done / self.expected)
        update_progress_artifact(artifact_id=self.artifact_id, progress=percent)  # type: ignore[arg-type]
        if self.bar is not None:
            self.bar.update(self.bar_task, completed=min(done, self.expected))

    def close(self) -> None:
        update_progress_artifact(artifact_id=self.artifact_id, progress=100.0)  # type: ignore[arg-type]
        if self.bar is not None:
            self.bar.stop()


@dataclass(frozen=True)
class DumpOutput:
    """What one engine's backup wrote, and what its manifest must record."""

    written: StreamResult
    snapshot: SnapshotFacts
    object_name: str
    engine: Engine = "mysqldump"
    tool_version: str = ""
    restore_hints: dict[str, str | int] = field(default_factory=dict)
    mydumper: MydumperDetails | None = None
    physical: PhysicalDetails | None = None


@io_task("stream-mysql-dump", retries=2, backoff=5)
def stream_dump(
    conn: MySQLConnection,
    database: str,
    source_facts: SourceFacts,
    stores: list[ObjectStore],
    prefix: str,
    codec: Codec,
    level: int,
    record_checksums: bool,
    engine: Engine = "mysqldump",
    threads: int = 2,
    chunk_rows: int = 100_000,
) -> DumpOutput:
    """Back `database` up once with `engine`, compressed, into every region."""
    if engine != "mysqldump":
        return _stream_engine(
            engine,
            conn,
            database,
            source_facts,
            stores,
            prefix,
            codec,
            level,
            record_checksums,
            threads,
            chunk_rows,
        )
    logger = get_run_logger()
    object_name = f"dump.sql{EXTENSIONS[codec]}"
    key = f"{prefix}{object_name}"
    progress = _Progress(source_facts.data_bytes, database)
    with ConsistentDump(conn, database, record_checksums=record_checksums) as dump:
        assert dump.process is not None and dump.stderr is not None
        facts_error: list[BaseException] = []

        def record() -> None:
            try:
                dump.record_table_facts(source_facts.tables)
            except BaseException as exc:
                facts_error.append(exc)

        recorder = threading.Thread(target=record, name="table-facts", daemon=True)
        recorder.start()

        def check_dump_exit() -> None:
            assert dump.process is not None and dump.stderr is not None
            returncode = dump.process.wait(timeout=600)
            dump.stderr.join(timeout=30)
            if returncode != 0:
                raise _dump_error(bytes(dump.stderr.text), returncode, database)
            recorder.join(timeout=3600)
            if recorder.is_alive():
                raise ExternalCommandError("row counts/checksums did not finish within 1 h")
            if facts_error:
                raise facts_error[0]
            dump.confirm()

        try:
            result = stream_to_stores(
                dump.output(),
                stores,
                key,
                codec,
                level,
                on_progress=progress,
                before_commit=check_dump_exit,
            )
        finally:
            progress.close()
        assert dump.facts is not None
        facts = dump.facts
    _log_proof(facts)
    logger.info(
        "wrote %s: %.1f MB from %.1f MB (%.1fx), sha256 %s…",
        object_name,
        result.size / 1e6,
        result.uncompressed_size / 1e6,
        result.uncompressed_size / max(result.size, 1),
        result.sha256[:12],
    )
    return DumpOutput(
        result,
        facts,
        object_name,
        tool_version=tool_version(dump.binary),
        restore_hints=facts.proof_hints(),
    )


def _log_proof(facts: SnapshotFacts) -> None:
    logger = get_run_logger()
    if facts.exact:
        logger.info(
            "row counts/checksums are exact (%s; global lock held %d ms, attempt %d)%s",
            facts.exact_by,
            facts.global_lock_ms,
            facts.attempts,
            f"; binlog {facts.binlog_file}:{facts.binlog_position} GTID {facts.gtid}"
            if facts.binlog_file
            else "",
        )
    else:
        logger.warning("row counts/checksums may differ from the dump: %s", facts.inexact_reason)


def _stream_engine(
    engine: Engine,
    conn: MySQLConnection,
    database: str,
    source_facts: SourceFacts,
    stores: list[ObjectStore],
    prefix: str,
    codec: Codec,
    level: int,
    record_checksums: bool,
    threads: int,
    chunk_rows: int,
) -> DumpOutput:
    """The `mydumper` and `physical` engines: the same compress, fan-out and commit rule."""
    progress = _Progress(source_facts.data_bytes, f"{database} ({engine})")
    producer: MydumperBackup | PhysicalBackup
    if engine == "mydumper":
        producer = MydumperBackup(
            conn, database, source_facts.tables, threads, chunk_rows, record_checksums, progress
        )
    else:
        producer = PhysicalBackup(
            conn,
            database,
            source_facts.tables,
            source_facts.server_version,
            threads,
            record_checksums,
            progress,
        )
    object_name = f"{producer.object_name}{EXTENSIONS[codec]}"
    try:
        with producer:
            written = stream_engine_backup(producer, stores, f"{prefix}{object_name}", codec, level)
    finally:
        progress.close()
    facts = producer.facts
    assert facts is not None
    _log_proof(facts)
    hints = facts.proof_hints()
    mydumper = physical = None
    if isinstance(producer, MydumperBackup):
        mydumper = producer.details()
        hints |= {"threads": threads, "rows_per_chunk": chunk_rows, "files": len(mydumper.files)}
    else:
        physical = producer.details()
        hints |= {"tool": physical.tool, "exact_by": physical.exact_by}
        if physical.to_lsn is not None:
            hints["to_lsn"] = physical.to_lsn
    get_run_logger().info(
        "wrote %s (%s): %.1f MB from %.1f MB (%.1fx), sha256 %s…; facts exact: %s",
        object_name,
        engine,
        written.size / 1e6,
        written.uncompressed_size / 1e6,
        written.uncompressed_size / max(written.size, 1),
        written.sha256[:12],
        facts.exact,
    )
    return DumpOutput(
        written,
        facts,
        object_name,
        engine=engine,
        tool_version=tool_version(producer.binary),
        restore_hints=hints,
        mydumper=mydumper,
        physical=physical,
    )


@io_task("verify-backup-copies", retries=2, backoff=2)
def verify_backup(
    stores: list[ObjectStore], key: str, written: StreamResult, codec: Codec
) -> list[RegionCheck]:
    """Read every region's copy back; raise BackupVerificationError on any mismatch."""
    checks = verify_copies(stores, key, written, codec)
    for check in checks:
        get_run_logger().info(
            "verified %s: %d bytes, sha256 ok%s",
            check.uri,
            check.size,
            ", decompressed in full" if check.decompressed else "",
        )
    return checks


def build_manifest(
    *,
    backup_id: str,
    source: str,
    database: str,
    source_facts: SourceFacts,
    dump: DumpOutput,
    codec: Codec,
    stores: list[ObjectStore],
    started_at: datetime,
) -> BackupManifest:
    """The manifest of a finished, verified backup."""
    prefix = backup_prefix("mysql", source, backup_id)
    snapshot, written = dump.snapshot, dump.written
    return BackupManifest(
        backup_id=backup_id,
        engine=dump.engine,
        source=source,
        database=database,
        server_version=source_facts.server_version,
        binlog_file=snapshot.binlog_file,
        binlog_position=snapshot.binlog_position,
        gtid=snapshot.gtid,
        started_at=started_at,
        consistent_at=snapshot.consistent_at,
        finished_at=datetime.now(UTC),
        codec=codec,
        objects=[
            StoredObject(
                name=dump.object_name,
                size=written.size,
                sha256=written.sha256,
                uncompressed_size=written.uncompressed_size,
            )
        ],
        tables={
            table: TableFacts(
                rows=rows,
                checksum=snapshot.checksums.get(table),
                longest_row_bytes=snapshot.longest_rows.get(table),
            )
            for table, rows in snapshot.rows.items()
        },
        views=source_facts.views,
        routines=source_facts.routines,
        catalog=source_facts.catalog,
        regions=[RegionCopy(region=s.region, uri=s.uri(prefix)) for s in stores],
        tool_versions={
            "dump": dump.tool_version,
            "python-zstandard": __import__("zstandard").__version__,
            "vibebench-ops": "0.1.0",
        },
        restore_hints=dump.restore_hints,
        prefix=prefix,
        mydumper=dump.mydumper,
        physical=dump.physical,
    )


@io_task("commit-backup-manifest", retries=3, backoff=2)
def commit_manifest(stores: list[ObjectStore], manifest: BackupManifest) -> None:
    """Write manifest.json last in every region: from now on the backup exists."""
    data = manifest.to_json()
    for store in stores:
        store.write_bytes(manifest.manifest_key, data)
        get_run_logger().info("committed %s", store.uri(manifest.manifest_key))
