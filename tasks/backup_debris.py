"""Debris of crashed backup runs: backup folders that never got their manifest.

A worker killed mid-backup leaves unfinished uploads (`dump.sql.zst.partial` in local-folder
regions) or data objects without `manifest.json`. They are listed as *incomplete*, with the
time since their last write, and removed once that is older than `stale_after` (a running
backup keeps writing, so it never looks stale). Folders whose manifest exists but cannot be
read are never touched here (retention refuses on them and a human decides).

Pure over the ObjectStore interface; imports nothing from Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tasks.catalog import BackupEntry, scan_backups
from tasks.storage import ObjectStore

BACKUP_KINDS: tuple[str, ...] = ("mysql", "mongodb", "influxdb")


def human_age(age: timedelta | None) -> str:
    """`3 d 4 h`, `2 h 5 min`, `40 s` (for listings)."""
    if age is None:
        return "-"
    seconds = max(0, int(age.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def incomplete_state(entry: BackupEntry, now: datetime) -> str:
    """How `vibeops backups` describes an entry without a readable manifest."""
    if entry.manifest_error:
        return f"unreadable manifest: {entry.manifest_error}"
    parts = []
    if entry.partials:
        parts.append(f"{len(entry.partials)} unfinished upload(s)")
    if entry.objects:
        parts.append(f"{len(entry.objects)} object(s), no manifest")
    return f"incomplete ({', '.join(parts)}; last written {human_age(entry.age(now))} ago)"


@dataclass(frozen=True)
class Debris:
    """One incomplete backup folder in one region, and whether it is stale."""

    region: str
    kind: str
    source: str
    backup_id: str
    prefix: str
    keys: list[str] = field(default_factory=list)
    size: int = 0
    age: timedelta | None = None
    stale: bool = False
    last_written: datetime | None = None

    @property
    def name(self) -> str:
        return f"{self.region}:{self.prefix}"

    @property
    def reason(self) -> str:
        age = human_age(self.age)
        if self.stale:
            return f"incomplete, last written {age} ago (past stale_after)"
        return f"incomplete, last written {age} ago: may still be running, kept"


def find_debris(
    store: ObjectStore,
    now: datetime,
    stale_after: timedelta,
    kinds: tuple[str, ...] = BACKUP_KINDS,
) -> list[Debris]:
    """Every incomplete backup folder of every source in one region, oldest first."""
    found: list[Debris] = []
    for kind in kinds:
        sources = {
            info.key.split("/")[1]
            for info in [*store.list_objects(f"{kind}/"), *store.list_partials(f"{kind}/")]
            if info.key.count("/") >= 2
        }
        for source in sorted(sources):
            for entry in scan_backups(store, source, kind):
                if not entry.incomplete:
                    continue
                age = entry.age(now)
                found.append(
                    Debris(
                        region=store.region,
                        kind=kind,
                        source=source,
                        backup_id=entry.backup_id,
                        prefix=entry.prefix,
                        keys=[o.key for o in [*entry.partials, *entry.objects]],
                        size=sum(o.size for o in [*entry.partials, *entry.objects]),
                        age=age,
                        stale=age is not None and age >= stale_after,
                        last_written=entry.last_written,
                    )
                )
    return sorted(found, key=lambda d: d.age or timedelta(0), reverse=True)


def remove_debris(store: ObjectStore, debris: Debris) -> int:
    """Delete a stale incomplete folder's objects; returns how many were deleted.

    Refuses (ValueError) when the folder was written to or got a manifest since it was found.
    """
    if not debris.stale:
        raise ValueError(f"{debris.prefix} is not stale; it is kept")
    current = [
        e for e in scan_backups(store, debris.source, debris.kind) if e.prefix == debris.prefix
    ]
    if current and not current[0].incomplete:
        raise ValueError(f"{debris.prefix} has a manifest now; it is kept")
    if current and current[0].last_written != debris.last_written:
        raise ValueError(f"{debris.prefix} was written to since it was found; it is kept")
    for key in debris.keys:
        store.delete(key)
    return len(debris.keys)
