"""Archived binlog segments and recovery points (pure chain logic over an ObjectStore).

A restorable point is a committed base backup plus the unbroken chain of archived segments
after its binlog position. `recovery_chain` decides what "unbroken" means: indexes
consecutive within one sequence, and each segment's starting GTID list equal to the previous
segment's last GTID state (mariadb-binlog itself does not notice a missing file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import ValidationError

from tasks.binlog_events import (
    format_gtid_list,
    gtid_covered,
    gtid_position,
    parse_gtid_list,
)
from tasks.binlog_manifest import (
    SEGMENT_MANIFEST_SUFFIX,
    SegmentManifest,
    binlog_root,
    parse_segment_manifest,
)
from tasks.catalog import committed_backups
from tasks.errors import StorageError
from tasks.manifest import BackupManifest
from tasks.storage import ObjectInfo, ObjectStore

GapKind = Literal[
    "no-binlog-position",  # the base was taken without binary logging
    "base-not-covered",  # the base's binlog file was never archived
    "missing-segment",  # a file in the middle of the chain is missing
    "gtid-mismatch",  # consecutive files whose GTID states do not join
    "new-sequence",  # the server was reset (RESET MASTER) after the chain's last file
]


@dataclass(frozen=True)
class ChainGap:
    """Where a chain breaks, what is missing, and what the operator should do."""

    kind: GapKind
    missing: str  # the file, position or sequence that is missing
    message: str = ""

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class RecoveryChain:
    """A base backup and the segments that follow it without a gap."""

    base: BackupManifest
    segments: list[SegmentManifest]
    gap: ChainGap | None = None

    @property
    def point_at(self) -> datetime:
        """The newest moment this chain can restore to."""
        times = [s.last_event_at for s in self.segments if s.last_event_at is not None]
        newest = max(times) if times else None
        return max(newest, self.base.consistent_at) if newest else self.base.consistent_at

    @property
    def gtid(self) -> str | None:
        """The last GTID per domain reached by the chain (a `--stop-position` for replay)."""
        if self.segments:
            return format_gtid_list(gtid_position(parse_gtid_list(self.segments[-1].gtid_last)))
        return self.base.gtid

    @property
    def events_after_base(self) -> bool:
        return any(s.transactions for s in self.segments)


@dataclass(frozen=True)
class RecoveryPoint:
    """The newest moment a source can be restored to, and how."""

    source: str
    chain: RecoveryChain

    @property
    def base(self) -> BackupManifest:
        return self.chain.base

    @property
    def point_at(self) -> datetime:
        return self.chain.point_at

    @property
    def gtid(self) -> str | None:
        return self.chain.gtid

    @property
    def kind(self) -> Literal["base", "binlog"]:
        """`binlog` when archived segments carry the point past the base backup."""
        return "binlog" if self.chain.point_at > self.chain.base.consistent_at else "base"

    def age_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.point_at).total_seconds())


@dataclass
class SegmentListing:
    """Committed segments of a source in one region, plus what could not be read."""

    segments: list[SegmentManifest]
    unreadable: dict[str, str] = field(default_factory=dict)  # manifest key -> error
    uncommitted: list[str] = field(default_factory=list)  # .zst keys without a manifest
    objects: list[ObjectInfo] = field(default_factory=list)  # every object listed


def scan_segments(store: ObjectStore, source: str) -> SegmentListing:
    """Every segment object of `source` in one region, manifests parsed."""
    objects = store.list_objects(binlog_root(source))
    keys = {info.key for info in objects}
    listing = SegmentListing(segments=[], objects=objects)
    for key in sorted(keys):
        if key.endswith(SEGMENT_MANIFEST_SUFFIX):
            try:
                listing.segments.append(parse_segment_manifest(store.read_bytes(key)))
            except (ValidationError, ValueError, StorageError) as exc:
                listing.unreadable[key] = f"unreadable segment manifest: {exc}"[:500]
        elif key.endswith(".zst") and key[: -len(".zst")] + SEGMENT_MANIFEST_SUFFIX not in keys:
            listing.uncommitted.append(key)
    listing.segments.sort(key=segment_order)
    return listing


def list_segments(store: ObjectStore, source: str) -> list[SegmentManifest]:
    """Committed segments of `source` in one region, ordered by (sequence start, index)."""
    return scan_segments(store, source).segments


def sequence_started(sequence: str) -> datetime:
    """When a sequence's first archived file was created (from its name)."""
    created = sequence.rsplit("-", 1)[-1]
    return datetime.strptime(created, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def segment_order(segment: SegmentManifest) -> tuple[datetime, str, int]:
    """Sequences in the order the server started them, then files by index."""
    return (sequence_started(segment.sequence), segment.sequence, segment.index)


def _joins(previous: SegmentManifest, segment: SegmentManifest) -> bool:
    return parse_gtid_list(previous.gtid_last) == parse_gtid_list(segment.gtid_list_start)


def _whole_second(at: datetime) -> datetime:
    return at.replace(microsecond=0)


def _holds_base(
    segment: SegmentManifest, successor: SegmentManifest | None, base: BackupManifest
) -> bool:
    """True when the base's position lies in `segment`: same file, the file still open when
    the base was taken (its successor created later), the base's GTID inside its range."""
    if segment.file != base.binlog_file:
        return False
    if base.binlog_position is not None and base.binlog_position > segment.end_position:
        return False
    taken = _whole_second(base.consistent_at)
    if segment.file_created_at is not None and segment.file_created_at > taken:
        return False
    closed_at = successor.file_created_at if successor is not None else None
    if closed_at is not None and closed_at < taken:
        return False
    if not base.gtid:
        return True
    base_gtid = parse_gtid_list(base.gtid)
    start = gtid_position(parse_gtid_list(segment.gtid_list_start))
    return gtid_covered(base_gtid, start) and gtid_covered(
        parse_gtid_list(segment.gtid_last), base_gtid
    )


def _first_segment(
    base: BackupManifest, segments: list[SegmentManifest]
) -> tuple[SegmentManifest | None, ChainGap | None]:
    """The segment holding the base's position, or the gap explaining why there is none."""
    by_key = {(s.sequence, s.index): s for s in segments}
    holding = [s for s in segments if _holds_base(s, by_key.get((s.sequence, s.index + 1)), base)]
    if holding:
        return holding[-1], None
    taken = _whole_second(base.consistent_at)
    later = [s for s in segments if s.file_created_at is not None and s.file_created_at > taken]
    if not later:
        return None, None  # the base's file is still open (or not yet archived): no gap
    where = f"{base.binlog_file}:{base.binlog_position}"
    return None, ChainGap(
        kind="base-not-covered",
        missing=str(base.binlog_file),
        message=f"base backup {base.backup_id} starts at {where} (GTID {base.gtid or '-'}), but "
        f"no archived segment holds that position while later files are archived "
        f"({later[0].sequence}/{later[0].file}): it was purged (or the server reset) before "
        "archive-binlogs copied it. Take a new base backup (backup-mysql) now, and keep the "
        "server's binlog_expire_logs_seconds longer than the archive interval.",
    )


def recovery_chain(base: BackupManifest, segments: list[SegmentManifest]) -> RecoveryChain:
    """The segments that follow `base` without a gap, and the first gap after them.

    `segments` are one source's committed segments (any order, any sequence).
    """
    if not base.binlog_file:
        return RecoveryChain(
            base,
            [],
            ChainGap(
                kind="no-binlog-position",
                missing="binlog position",
                message=f"base backup {base.backup_id} records no binlog position (the source "
                "ran without log_bin): it can only be restored to its own consistent point. "
                "Enable log_bin and binlog_format=ROW on the source, then take a new base backup.",
            ),
        )
    ordered = sorted(segments, key=segment_order)
    first, gap = _first_segment(base, ordered)
    if first is None:
        return RecoveryChain(base, [], gap)
    chain = [first]
    in_sequence = [s for s in ordered if s.sequence == first.sequence and s.index > first.index]
    for segment in in_sequence:
        previous = chain[-1]
        if segment.index != previous.index + 1:
            missing = f"{previous.file.rsplit('.', 1)[0]}.{previous.index + 1:06d}"
            gap = ChainGap(
                kind="missing-segment",
                missing=missing,
                message=f"segment {first.sequence}/{missing} is missing between "
                f"{previous.file} and {segment.file}: the chain from base {base.backup_id} ends "
                f"at {previous.last_event_at or previous.file}. If the server purged it before "
                "archive-binlogs copied it, take a new base backup (backup-mysql) now.",
            )
            break
        if not _joins(previous, segment):
            gap = ChainGap(
                kind="gtid-mismatch",
                missing=f"GTIDs {previous.gtid_last} .. {segment.gtid_list_start}",
                message=f"{segment.file} starts at GTID state {segment.gtid_list_start!r} but "
                f"{previous.file} ends at {previous.gtid_last!r}: transactions are missing "
                "between them. Take a new base backup (backup-mysql) now.",
            )
            break
        chain.append(segment)
    if gap is None:
        newer = [
            s
            for s in ordered
            if segment_order(s) > segment_order(chain[-1]) and s.sequence != first.sequence
        ]
        if newer:
            gap = ChainGap(
                kind="new-sequence",
                missing=f"sequence {newer[0].sequence}",
                message=f"the server was reset (RESET MASTER): sequence {newer[0].sequence} "
                f"restarts at {newer[0].file} and cannot be chained to base {base.backup_id}. "
                "Take a new base backup (backup-mysql) to make later writes restorable.",
            )
    return RecoveryChain(base, chain, gap)


def best_recovery_point(
    source: str, bases: list[BackupManifest], segments: list[SegmentManifest]
) -> RecoveryPoint | None:
    """The base (newest first on ties) whose chain reaches furthest."""
    best: RecoveryPoint | None = None
    for base in sorted(bases, key=lambda b: b.consistent_at, reverse=True):
        point = RecoveryPoint(source, recovery_chain(base, segments))
        if best is None or point.point_at > best.point_at:
            best = point
    return best


def recovery_point_label(point: RecoveryPoint) -> str:
    """`<base id> + N binlog segment(s)` for reports and gates."""
    count = len(point.chain.segments)
    return f"{point.base.backup_id} + {count} binlog segment{'s' if count != 1 else ''}"


def newest_restorable_point(store: ObjectStore, source: str) -> RecoveryPoint | None:
    """The newest committed base of `source` in this region plus its unbroken chain."""
    bases = committed_backups(store, source, "mysql")
    if not bases:
        return None
    return best_recovery_point(source, bases, list_segments(store, source))


def newest_restorable_point_in_regions(
    stores: list[ObjectStore], source: str
) -> RecoveryPoint | None:
    """The furthest recovery point over every reachable region.

    Raises:
        StorageError: when no region could be read at all.
    """
    best: RecoveryPoint | None = None
    errors = []
    for store in stores:
        try:
            point = newest_restorable_point(store, source)
        except Exception as exc:
            errors.append(f"{store.region}: {exc}")
            continue
        if point is not None and (best is None or point.point_at > best.point_at):
            best = point
    if errors and len(errors) == len(stores):
        raise StorageError("no backup region could be read: " + "; ".join(errors))
    return best
