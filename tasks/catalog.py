"""The backup catalog: what each region holds, read from object listings and manifests."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError

from tasks.errors import StorageError
from tasks.manifest import (
    MANIFEST_NAME,
    BackupManifest,
    backup_id_from_key,
    parse_manifest,
    source_prefix,
)
from tasks.storage import ObjectInfo, ObjectStore


@dataclass
class BackupEntry:
    """One backup folder in one region; committed when its manifest is readable."""

    backup_id: str
    prefix: str
    region: str
    objects: list[ObjectInfo] = field(default_factory=list)
    manifest: BackupManifest | None = None
    manifest_error: str | None = None
    partials: list[ObjectInfo] = field(default_factory=list)

    @property
    def committed(self) -> bool:
        return self.manifest is not None

    @property
    def incomplete(self) -> bool:
        """No manifest was ever written (a crashed or running backup), as opposed to an
        unreadable one."""
        return self.manifest is None and self.manifest_error is None

    @property
    def total_size(self) -> int:
        return sum(obj.size for obj in self.objects)

    @property
    def last_written(self) -> datetime | None:
        """When any of its objects (unfinished uploads included) was last written."""
        times = [obj.updated for obj in [*self.objects, *self.partials]]
        return max(times) if times else None

    def age(self, now: datetime) -> timedelta | None:
        """Time since the last write: a running backup keeps writing, a crashed one does not."""
        last = self.last_written
        return now - last if last is not None else None


def scan_backups(store: ObjectStore, source: str, kind: str = "mysql") -> list[BackupEntry]:
    """Every backup folder of `source` in one region, newest first, manifests parsed."""
    grouped: dict[str, list[ObjectInfo]] = defaultdict(list)
    partials: dict[str, list[ObjectInfo]] = defaultdict(list)
    prefixes: dict[str, str] = {}
    listings = (
        (grouped, store.list_objects(source_prefix(kind, source))),
        (partials, store.list_partials(source_prefix(kind, source))),
    )
    for target, infos in listings:
        for info in infos:
            backup_id = backup_id_from_key(info.key)
            if backup_id is None:
                continue
            target[backup_id].append(info)
            prefixes[backup_id] = info.key[: info.key.index(backup_id) + len(backup_id) + 1]
    entries = []
    for backup_id in prefixes:
        entry = BackupEntry(
            backup_id=backup_id,
            prefix=prefixes[backup_id],
            region=store.region,
            objects=grouped.get(backup_id, []),
            partials=partials.get(backup_id, []),
        )
        if any(obj.key == f"{entry.prefix}{MANIFEST_NAME}" for obj in entry.objects):
            try:
                entry.manifest = parse_manifest(store.read_bytes(f"{entry.prefix}{MANIFEST_NAME}"))
            except (ValidationError, ValueError, StorageError) as exc:
                entry.manifest_error = f"unreadable manifest: {exc}"[:500]
        entries.append(entry)
    return sorted(entries, key=lambda e: e.backup_id, reverse=True)


def committed_backups(store: ObjectStore, source: str, kind: str = "mysql") -> list[BackupManifest]:
    """Committed backups of `source` in one region, newest first."""
    return [e.manifest for e in scan_backups(store, source, kind) if e.manifest is not None]


def newest_committed_backup(
    stores: list[ObjectStore], source: str, kind: str = "mysql"
) -> BackupManifest | None:
    """The newest committed backup of `source` in any reachable region (None if there is none).

    Raises:
        StorageError: when no region could be listed at all.
    """
    newest: BackupManifest | None = None
    errors = []
    for store in stores:
        try:
            manifests = committed_backups(store, source, kind)
        except Exception as exc:
            errors.append(f"{store.region}: {exc}")
            continue
        if manifests and (newest is None or manifests[0].consistent_at > newest.consistent_at):
            newest = manifests[0]
    if errors and len(errors) == len(stores):
        raise StorageError("no backup region could be listed: " + "; ".join(errors))
    return newest
