"""Archiving closed binary logs: which files, which sequence, gaps, and one segment's copy.

Plain functions (no Prefect): the flow's tasks in tasks/binlog_tasks.py call them.
A segment is committed by its manifest, written last in every region; a run killed before
that leaves no manifest, and the next run copies the same file again from the server.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from blocks.mysql import MySQLConnection
from tasks.backup_stream import RegionCheck, stream_to_stores, verify_copies
from tasks.binlog_catalog import ChainGap, recovery_chain, segment_order
from tasks.binlog_events import (
    BinlogSummary,
    format_gtid_list,
    gtid_covered,
    gtid_position,
    parse_gtid_list,
    read_binlog_summary,
)
from tasks.binlog_manifest import (
    SegmentManifest,
    binlog_index,
    segment_prefix,
    sequence_name,
)
from tasks.binlog_source import BinaryLog, BinlogServerState, copy_binlog
from tasks.errors import BackupVerificationError
from tasks.manifest import BackupManifest, RegionCopy, StoredObject
from tasks.storage import ObjectStore

GapKind = Literal[
    "purged-before-archived",
    "new-sequence",
    "base-not-covered",
    "missing-segment",
    "gtid-mismatch",
    "no-binlog-position",
]


@dataclass(frozen=True)
class ArchiveGap:
    """A break in what can be recovered, and what the operator must do about it."""

    kind: GapKind
    missing: str
    message: str

    @classmethod
    def from_chain(cls, gap: ChainGap) -> ArchiveGap:
        return cls(kind=gap.kind, missing=gap.missing, message=gap.message)


@contextmanager
def work_folder() -> Iterator[Path]:
    """A private scratch folder for raw copies, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="vibeops-binlog-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def committed_everywhere(listings: list[list[SegmentManifest]]) -> list[SegmentManifest]:
    """Segments whose manifest every region holds (a crash between regions is redone)."""
    if not listings:
        return []
    keys = [{(s.sequence, s.file) for s in listing} for listing in listings]
    common = set.intersection(*keys)
    return sorted((s for s in listings[0] if (s.sequence, s.file) in common), key=segment_order)


def last_archived(segments: list[SegmentManifest]) -> SegmentManifest | None:
    return max(segments, key=segment_order) if segments else None


def pending_logs(
    state: BinlogServerState, last: SegmentManifest | None, start_file: str | None
) -> list[BinaryLog]:
    """The closed files to archive now, oldest first.

    With nothing archived yet, archiving starts at `start_file` (the newest base's file) when
    the server still has it, else at its oldest file. When the server's numbering went back
    below the last archived file, or its GTID state below the last archived one (RESET
    MASTER), every closed file belongs to a new sequence.
    """
    closed = state.closed
    if last is None:
        if start_file and any(log.file == start_file for log in closed + state.logs[-1:]):
            return [log for log in closed if log.index >= binlog_index(start_file)]
        return closed
    active = state.active
    server_state = parse_gtid_list(state.gtid_binlog_state)
    gtids_went_back = not gtid_covered(server_state, gtid_position(parse_gtid_list(last.gtid_last)))
    if (active is not None and active.index <= last.index) or gtids_went_back:
        return closed  # RESET MASTER: every closed file is of a new sequence
    return [log for log in closed if log.index > last.index]


def _file_name(like: str, index: int) -> str:
    return f"{like.rsplit('.', 1)[0]}.{index:06d}"


def place_segment(
    last: SegmentManifest | None, summary: BinlogSummary, log: BinaryLog
) -> tuple[str, ArchiveGap | None]:
    """The sequence a freshly copied file belongs to, and the gap it reveals (if any)."""
    created = summary.created_at or datetime.now(UTC)
    fresh = sequence_name(summary.server_id, created)
    if last is None:
        return fresh, None
    last_state = parse_gtid_list(last.gtid_last)
    went_back = (
        summary.server_id != last.server_id
        or log.index <= last.index
        or (last.file_created_at is not None and created < last.file_created_at)
        or not gtid_covered(summary.gtid_list_start, gtid_position(last_state))
    )
    if went_back:
        return fresh, ArchiveGap(
            kind="new-sequence",
            missing=f"continuation of sequence {last.sequence}",
            message=f"the source's binary logs restarted (RESET MASTER, or another server id): "
            f"{log.file} (server {summary.server_id}, GTIDs from "
            f"{format_gtid_list(summary.gtid_list_start) or 'empty'}) does not follow "
            f"{last.sequence}/{last.file} (ends at GTID {last.gtid_last or '-'}). It starts "
            f"the new archive sequence {fresh}. Writes from now on are restorable only from a "
            "base backup taken after the reset: run backup-mysql now.",
        )
    if log.index > last.index + 1:
        first, final = _file_name(log.file, last.index + 1), _file_name(log.file, log.index - 1)
        missing = first if first == final else f"{first}..{final}"
        return last.sequence, ArchiveGap(
            kind="purged-before-archived",
            missing=missing,
            message=f"{missing} was purged from the server before archive-binlogs copied it: "
            f"transactions after GTID {last.gtid_last or '-'} up to "
            f"{format_gtid_list(summary.gtid_list_start) or '-'} are lost for point-in-time "
            "recovery. Run backup-mysql now (a new base starts a new restorable chain), and "
            "set binlog_expire_logs_seconds well above the archive interval.",
        )
    if parse_gtid_list(last.gtid_last) != summary.gtid_list_start:
        return last.sequence, ArchiveGap(
            kind="gtid-mismatch",
            missing=f"GTIDs {last.gtid_last} .. {format_gtid_list(summary.gtid_list_start)}",
            message=f"{log.file} starts at GTID state "
            f"{format_gtid_list(summary.gtid_list_start)!r} but {last.file} ended at "
            f"{last.gtid_last!r}: transactions are missing between them. Run backup-mysql now.",
        )
    return last.sequence, None


def summarize_file(path: Path) -> tuple[BinlogSummary, str]:
    """The binlog summary of a raw copy and the sha256 of its bytes (one read)."""
    digest = hashlib.sha256()

    class _Hashing:
        def __init__(self, inner):  # type: ignore[no-untyped-def]
            self.inner = inner

        def read(self, size: int = -1) -> bytes:
            data: bytes = self.inner.read(size)
            digest.update(data)
            return data

    with open(path, "rb") as handle:
        summary = read_binlog_summary(_Hashing(handle))  # type: ignore[arg-type]
        digest.update(handle.read())  # anything after the last whole event
    return summary, digest.hexdigest()


@dataclass(frozen=True)
class ArchivedSegment:
    """One segment committed in every region by this run."""

    manifest: SegmentManifest
    checks: list[RegionCheck]
    gap: ArchiveGap | None
    seconds: float


def archive_segment(
    conn: MySQLConnection,
    stores: list[ObjectStore],
    source: str,
    log: BinaryLog,
    last: SegmentManifest | None,
    work_dir: Path,
    level: int = 3,
) -> ArchivedSegment:
    """Copy one closed binary log from the server into every region; manifest last.

    Raises:
        BackupVerificationError: the copy is not the server's whole file, or a region's copy
            does not read back; nothing is committed then.
    """
    started = datetime.now(UTC)
    path = copy_binlog(conn, log.file, work_dir)
    try:
        raw_size = path.stat().st_size
        if raw_size != log.size:
            raise BackupVerificationError(
                f"the copy of {log.file} has {raw_size} bytes but the server reports "
                f"{log.size}: not archived; the next run copies it again"
            )
        summary, raw_sha256 = summarize_file(path)
        sequence, gap = place_segment(last, summary, log)
        prefix = segment_prefix(source, sequence)
        name = f"{log.file}.zst"
        with open(path, "rb") as handle:
            written = stream_to_stores(handle, stores, f"{prefix}{name}", "zstd", level)
        checks = verify_copies(stores, f"{prefix}{name}", written, "zstd")
    finally:
        path.unlink(missing_ok=True)
    manifest = SegmentManifest(
        source=source,
        sequence=sequence,
        server_id=summary.server_id,
        file=log.file,
        index=log.index,
        start_position=4,
        end_position=raw_size,
        raw_size=raw_size,
        raw_sha256=raw_sha256,
        object=StoredObject(
            name=name,
            size=written.size,
            sha256=written.sha256,
            uncompressed_size=written.uncompressed_size,
        ),
        gtid_list_start=format_gtid_list(summary.gtid_list_start),
        gtid_last=format_gtid_list(summary.gtid_last),
        transactions=summary.transactions,
        first_event_at=summary.first_event_at,
        last_event_at=summary.last_event_at,
        file_created_at=summary.created_at,
        archived_at=datetime.now(UTC),
        regions=[RegionCopy(region=s.region, uri=s.uri(prefix)) for s in stores],
        prefix=prefix,
    )
    data = manifest.to_json()
    for store in stores:
        store.write_bytes(manifest.manifest_key, data)  # the commit point, last
    return ArchivedSegment(manifest, checks, gap, (datetime.now(UTC) - started).total_seconds())


def oldest_unarchived_commit(
    conn: MySQLConnection, active: BinaryLog, work_dir: Path
) -> datetime | None:
    """The first commit time in the active (never archived) file, or None when it has none."""
    path = copy_binlog(conn, active.file, work_dir / "active")
    try:
        summary, _ = summarize_file(path)
    finally:
        path.unlink(missing_ok=True)
    return summary.first_event_at


def should_flush(
    oldest: datetime | None, now: datetime, max_lag: timedelta, interval: timedelta
) -> bool:
    """Flush when the oldest unarchived commit would be older than `max_lag` by the next run."""
    return oldest is not None and now - oldest + interval >= max_lag


def base_coverage_gap(
    newest_base: BackupManifest | None, segments: list[SegmentManifest]
) -> ArchiveGap | None:
    """The first gap in the newest base's chain: writes after it are not restorable."""
    if newest_base is None:
        return None
    gap = recovery_chain(newest_base, segments).gap
    return ArchiveGap.from_chain(gap) if gap is not None else None
