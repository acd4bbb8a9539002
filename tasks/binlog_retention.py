"""Retention of archived binlog segments: they live and go with the base backups that need them.

A base needs every segment from the one holding its binlog position onwards. A segment is
kept while any kept base needs it, archived while the bases needing it are at most archived,
and deleted only when every base that needs it is deleted, so the newest-N guard of base
backups covers their whole chains. Segments older than every base's start are needed by none
and go once some base has a start (pure: no I/O).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from tasks.binlog_catalog import SegmentListing, recovery_chain, segment_order
from tasks.binlog_manifest import SegmentManifest
from tasks.catalog import BackupEntry
from tasks.errors import RetentionRefused
from tasks.manifest import BackupManifest
from tasks.retention import BackupRule, Decision, ObjectStep, RulePlan, plan_backup_rule

_STRENGTH = {Decision.DELETE: 0, Decision.ARCHIVE: 1, Decision.KEEP: 2}


def chain_start(
    base: BackupManifest, segments: Sequence[SegmentManifest]
) -> SegmentManifest | None:
    """The first segment `base` needs: the one holding its position, else the first one
    created after it (its own file was never archived), else None (nothing archived after it)."""
    if not base.binlog_file:
        return None
    chain = recovery_chain(base, list(segments))
    if chain.segments:
        return chain.segments[0]
    later = [
        s
        for s in segments
        if s.file_created_at is not None and s.file_created_at > base.consistent_at
    ]
    return min(later, key=segment_order) if later else None


def decide_segments(
    bases: Sequence[BackupManifest],
    decisions: Mapping[str, Decision],
    segments: Sequence[SegmentManifest],
) -> dict[tuple[str, str], Decision]:
    """KEEP, ARCHIVE or DELETE per segment (sequence, file), from its bases' decisions."""
    starts = [
        (segment_order(start), decisions.get(base.backup_id, Decision.KEEP))
        for base in bases
        if (start := chain_start(base, segments)) is not None
    ]
    result: dict[tuple[str, str], Decision] = {}
    for segment in segments:
        order = segment_order(segment)
        needing = [decision for begin, decision in starts if begin <= order]
        if needing:
            decision = max(needing, key=lambda d: _STRENGTH[d])
        else:
            decision = Decision.DELETE if starts else Decision.KEEP
        result[(segment.sequence, segment.file)] = decision
    return result


def plan_segment_steps(
    region: str,
    bases: Sequence[BackupManifest],
    decisions: Mapping[str, Decision],
    listing: SegmentListing,
    archive_class: str = "ARCHIVE",
) -> list[ObjectStep]:
    """Object steps for one source's segments in one region: data object first, manifest last.

    Raises:
        RetentionRefused: a segment manifest is unreadable (which base needs it is unknown).
    """
    if listing.unreadable:
        details = "; ".join(f"{k}: {v}" for k, v in list(listing.unreadable.items())[:3])
        raise RetentionRefused(
            f"region {region}: {len(listing.unreadable)} binlog segment manifest(s) unreadable "
            f"({details}); no segment was archived or deleted, repair or remove them by hand"
        )
    info = {o.key: o for o in listing.objects}
    steps: list[ObjectStep] = []
    decided = decide_segments(bases, decisions, listing.segments)
    for segment in sorted(listing.segments, key=segment_order):
        decision = decided[(segment.sequence, segment.file)]
        if decision == Decision.KEEP:
            continue
        for key in (segment.object_key, segment.manifest_key):
            obj = info.get(key)
            if obj is None:
                continue
            if decision == Decision.ARCHIVE and (
                (obj.storage_class or "STANDARD").upper() == archive_class.upper()
            ):
                continue
            steps.append(
                ObjectStep(
                    region=region,
                    key=key,
                    size=obj.size,
                    action="delete" if decision == Decision.DELETE else "archive",
                    backup_id=f"binlog:{segment.sequence}/{segment.file}",
                )
            )
    return steps


def backup_sources(entries: Iterable[BackupEntry]) -> list[str]:
    """The source names of a region's backup folders (`<kind>/<source>/...`)."""
    return sorted({entry.prefix.split("/")[1] for entry in entries})


def plan_backup_rule_with_segments(
    rule: BackupRule,
    now: datetime,
    catalogs: Mapping[str, Sequence[BackupEntry]],
    segments: Mapping[str, Mapping[str, SegmentListing]],
    protected: Iterable[str] = (),
    archive_classes: Mapping[str, str] | None = None,
) -> RulePlan:
    """`plan_backup_rule` plus the binlog segments (region -> source -> listing) that follow
    each base backup's decision."""
    plan = plan_backup_rule(rule, now, catalogs, protected, archive_classes)
    extra: list[ObjectStep] = []
    for region, by_source in sorted(segments.items()):
        decisions = plan.decisions.get(region, {})
        for source, listing in sorted(by_source.items()):
            bases = [
                e.manifest
                for e in catalogs.get(region, [])
                if e.manifest is not None and e.manifest.source == source
            ]
            wanted = (archive_classes or {}).get(region, "ARCHIVE")
            extra += plan_segment_steps(region, bases, decisions, listing, wanted)
    if not extra:
        return plan
    return plan.model_copy(
        update={
            "steps": plan.steps + extra,
            "objects": plan.objects + len(extra),
            "bytes": plan.bytes + sum(s.size for s in extra),
            "notes": [
                *plan.notes,
                f"{len(extra)} binlog segment object step(s) follow their bases",
            ],
        }
    )
