"""The Markdown report and event payloads of archive-binlogs (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tasks.binlog_archive import ArchivedSegment, ArchiveGap
from tasks.binlog_catalog import RecoveryPoint


@dataclass
class ArchiveRun:
    """What one archive-binlogs run did."""

    source: str
    started_at: datetime
    archived: list[ArchivedSegment] = field(default_factory=list)
    gaps: list[ArchiveGap] = field(default_factory=list)
    lag_before_s: float | None = None
    flushed: bool = False
    notes: list[str] = field(default_factory=list)
    point: RecoveryPoint | None = None

    @property
    def bytes_stored(self) -> int:
        return sum(a.manifest.object.size for a in self.archived)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def render_archive_report(run: ArchiveRun, now: datetime, error: str | None = None) -> str:
    """The run's artifact: archived segments, gaps with what to do, the recovery point."""
    status = "FAILED" if error or run.gaps else "ok"
    lines = [f"# Binlog archive of `{run.source}` — {status}", ""]
    if error:
        lines += [f"**Error:** {error}", ""]
    for gap in run.gaps:
        lines += [f"**Gap ({gap.kind}, missing {gap.missing}):** {gap.message}", ""]
    point = run.point
    lines += [
        "| fact | value |",
        "|---|---|",
        f"| segments archived | {len(run.archived)} ({run.bytes_stored / 1e6:,.2f} MB stored) |",
        f"| oldest unarchived commit at start | {_age(run.lag_before_s)} old |",
        f"| flushed binary logs | {'yes' if run.flushed else 'no'} |",
    ]
    if point is not None:
        lines += [
            f"| newest restorable point | {point.point_at:%Y-%m-%d %H:%M:%S} UTC "
            f"({_age(point.age_seconds(now))} ago, GTID {point.gtid or '-'}) |",
            f"| from base backup | `{point.base.backup_id}` + {len(point.chain.segments)} "
            "segment(s) |",
        ]
    else:
        lines.append(
            "| newest restorable point | none: no committed base backup (run backup-mysql) |"
        )
    lines += [f"| note | {note} |" for note in run.notes]
    if run.archived:
        lines += [
            "",
            "| sequence | file | transactions | first commit | last commit | GTID after | "
            "raw → stored |",
            "|---|---|---|---|---|---|---|",
        ]
        for item in run.archived:
            seg = item.manifest
            lines.append(
                f"| {seg.sequence} | {seg.file} | {seg.transactions} | "
                f"{seg.first_event_at or '-'} | {seg.last_event_at or '-'} | "
                f"{seg.gtid_last or '-'} | {seg.raw_size:,} → {seg.object.size:,} B |"
            )
    return "\n".join(lines)


def archived_payload(run: ArchiveRun, now: datetime) -> dict[str, object]:
    """The `vibeops.binlog.archived` event payload."""
    point = run.point
    last = run.archived[-1].manifest if run.archived else None
    return {
        "source": run.source,
        "segments": [f"{a.manifest.sequence}/{a.manifest.file}" for a in run.archived],
        "bytes_stored": run.bytes_stored,
        "last_event_at": last.last_event_at.isoformat() if last and last.last_event_at else None,
        "gtid": last.gtid_last if last else None,
        "flushed": run.flushed,
        "lag_before_s": round(run.lag_before_s, 1) if run.lag_before_s is not None else None,
        "recovery_point_at": point.point_at.isoformat() if point else None,
        "recovery_point_age_s": round(point.age_seconds(now), 1) if point else None,
    }


def gap_payload(run: ArchiveRun, gap: ArchiveGap) -> dict[str, object]:
    """The `vibeops.binlog.gap` event payload: what broke and what to do."""
    return {"source": run.source, "kind": gap.kind, "missing": gap.missing, "action": gap.message}
