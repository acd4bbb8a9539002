"""Prefect tasks of archive-binlogs: preflight, catalog, flush, one segment per task run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import get_run_logger

from blocks.mysql import MySQLConnection
from tasks.backup import io_task
from tasks.binlog_archive import (
    ArchivedSegment,
    archive_segment,
    committed_everywhere,
    oldest_unarchived_commit,
    should_flush,
)
from tasks.binlog_catalog import list_segments
from tasks.binlog_manifest import SegmentManifest
from tasks.binlog_source import (
    BinaryLog,
    BinlogServerState,
    binlog_format_problem,
    flush_binary_logs,
    read_binlog_state,
)
from tasks.catalog import newest_committed_backup
from tasks.errors import ConfigurationError
from tasks.manifest import BackupManifest
from tasks.mysql import find_tool
from tasks.storage import ObjectStore


@io_task("preflight-binlog-archive", retries=3, backoff=2)
def preflight_binlog_archive(conn: MySQLConnection, stores: list[ObjectStore]) -> BinlogServerState:
    """log_bin on, binlog_format=ROW, the copy tool present, every region ready."""
    find_tool("mariadb-binlog", "mysqlbinlog", package="mariadb-client")
    state = read_binlog_state(conn)
    problem = binlog_format_problem(state)
    if problem:
        raise ConfigurationError(problem)
    for store in stores:
        store.check_ready()
    get_run_logger().info(
        "%s:%s server_id %d: %d binary log(s), active %s, GTID state %s",
        conn.host,
        conn.port,
        state.server_id,
        len(state.logs),
        state.active.file if state.active else "-",
        state.gtid_binlog_state or "-",
    )
    return state


@io_task("read-binlog-archive", retries=3, backoff=2)
def read_archive(
    stores: list[ObjectStore], source: str
) -> tuple[list[SegmentManifest], BackupManifest | None]:
    """Segments committed in every region, and the newest committed base backup."""
    listings = [list_segments(store, source) for store in stores]
    return committed_everywhere(listings), newest_committed_backup(stores, source, "mysql")


@dataclass(frozen=True)
class LagCheck:
    """The server state after the lag check, and what it did."""

    state: BinlogServerState
    lag_before_s: float | None  # age of the oldest unarchived commit (None: there is none)
    flushed: bool
    note: str | None = None


@io_task("bound-binlog-lag", retries=2, backoff=2)
def bound_lag(
    conn: MySQLConnection,
    state: BinlogServerState,
    max_lag: timedelta,
    interval: timedelta,
    work_dir: Path,
) -> LagCheck:
    """FLUSH BINARY LOGS when the active file's oldest commit would outgrow `max_lag`."""
    logger = get_run_logger()
    assert state.active is not None
    now = datetime.now(UTC)
    oldest = oldest_unarchived_commit(conn, state.active, work_dir)
    lag = (now - oldest).total_seconds() if oldest else None
    if not should_flush(oldest, now, max_lag, interval):
        return LagCheck(state, lag, flushed=False)
    refused = flush_binary_logs(conn)
    if refused:
        logger.warning(refused)
        return LagCheck(state, lag, flushed=False, note=refused)
    logger.info("flushed binary logs: %s held commits from %s on", state.active.file, oldest)
    return LagCheck(read_binlog_state(conn), lag, flushed=True)


@io_task("archive-binlog-segment", retries=2, backoff=3)
def archive_one(
    conn: MySQLConnection,
    stores: list[ObjectStore],
    source: str,
    log: BinaryLog,
    last: SegmentManifest | None,
    work_dir: Path,
    level: int,
) -> ArchivedSegment:
    """One closed binary log into every region, verified, manifest last."""
    done = archive_segment(conn, stores, source, log, last, work_dir, level)
    seg = done.manifest
    get_run_logger().info(
        "archived %s/%s: %d transactions, %.1f KB -> %.1f KB zstd, GTID %s, last commit %s",
        seg.sequence,
        seg.file,
        seg.transactions,
        seg.raw_size / 1e3,
        seg.object.size / 1e3,
        seg.gtid_last or "-",
        seg.last_event_at or "-",
    )
    return done
