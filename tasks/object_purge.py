"""Object side of retention: listings, catalogs, and carrying out a plan's object steps.

Works on the `ObjectStore` interface, so GCS buckets and local folders behave the same.
Steps arrive in plan order: a backup's data objects first and its manifest last, so an
interrupted purge leaves a folder the next run recognises and finishes.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from blocks.backup_store import BackupStore
from tasks.backup import retry_transient
from tasks.binlog_catalog import SegmentListing, scan_segments
from tasks.catalog import BackupEntry, scan_backups
from tasks.errors import BackupVerificationError
from tasks.retention import COMPRESSED_SUFFIX, ObjectStep
from tasks.storage import READ_CHUNK, ObjectInfo, ObjectStore, open_store


def open_stores(store: BackupStore) -> dict[str, ObjectStore]:
    """Every destination of the backup store, by region (primary first)."""
    return {dest.region: open_store(dest) for dest in store.destinations}


def archive_classes(store: BackupStore) -> dict[str, str]:
    """The storage class each region archives to."""
    return {
        dest.region: getattr(dest, "archive_storage_class", "ARCHIVE")
        for dest in store.destinations
    }


@task(
    cache_policy=NO_CACHE,
    name="list-prefix",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def list_prefix(store: ObjectStore, prefix: str) -> list[ObjectInfo]:
    """Every object under `prefix` in one region."""
    return store.list_objects(prefix)


@task(
    cache_policy=NO_CACHE,
    name="scan-backup-catalog",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def scan_backup_catalog(
    store: ObjectStore, backup_kind: str, sources: Sequence[str] = ()
) -> list[BackupEntry]:
    """Every backup folder of the given sources (all sources when empty) in one region."""
    if not sources:
        found = {info.key.split("/")[1] for info in store.list_objects(f"{backup_kind}/")}
        sources = sorted(s for s in found if s)
    entries: list[BackupEntry] = []
    for source in sources:
        entries += scan_backups(store, source, backup_kind)
    return entries


@task(
    cache_policy=NO_CACHE,
    name="scan-binlog-segments",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def scan_segment_catalog(store: ObjectStore, sources: Sequence[str]) -> dict[str, SegmentListing]:
    """The archived binlog segments of each MySQL source in one region."""
    return {source: scan_segments(store, source) for source in sources}


@dataclass
class StepTotals:
    """What a batch of object steps did."""

    deleted: int = 0
    archived: int = 0
    compressed: int = 0
    bytes_deleted: int = 0
    bytes_archived: int = 0
    bytes_compressed: int = 0
    bytes_saved: int = 0
    errors: list[str] = field(default_factory=list)


def compress_object(store: ObjectStore, key: str) -> tuple[int, int]:
    """Gzip `key` into `<key>.gz`, verify the copy, then delete the original.

    An existing `<key>.gz` from an interrupted run is verified and reused, or rewritten when it
    does not match. The original is deleted only after the copy decompresses to the same
    SHA-256 and size.

    Returns:
        (original bytes, compressed bytes).

    Raises:
        BackupVerificationError: when the written copy does not match (the copy is removed).
    """
    target = f"{key}{COMPRESSED_SUFFIX}"
    if store.exists(target):
        original = _digest(store.iter_chunks(key))
        if _gzip_digest(store, target) == original:
            store.delete(key)
            return original[1], _size_of(store, target)
    hasher = hashlib.sha256()
    size = 0
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    writer = store.open_writer(target)
    try:
        for chunk in store.iter_chunks(key):
            hasher.update(chunk)
            size += len(chunk)
            if out := compressor.compress(chunk):
                writer.write(out)
        writer.write(compressor.flush())
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    if _gzip_digest(store, target) != (hasher.hexdigest(), size):
        store.delete(target)
        raise BackupVerificationError(
            f"region {store.region}: {target} does not decompress to {key}; copy removed, "
            "original kept"
        )
    store.delete(key)
    return size, _size_of(store, target)


def _digest(chunks: Iterable[bytes]) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


def _size_of(store: ObjectStore, key: str) -> int:
    return next((info.size for info in store.list_objects(key) if info.key == key), 0)


def _gzip_digest(store: ObjectStore, key: str) -> tuple[str, int] | None:
    """SHA-256 and size of a gzip object's decompressed content (None if it is not gzip)."""
    inflater = zlib.decompressobj(wbits=31)

    def inflated() -> Iterator[bytes]:
        for chunk in store.iter_chunks(key, READ_CHUNK):
            yield inflater.decompress(chunk)
        yield inflater.flush()

    try:
        result = _digest(inflated())
    except zlib.error:
        return None
    return result if inflater.eof else None


@task(cache_policy=NO_CACHE, name="run-object-steps")
def run_object_steps(
    stores: dict[str, ObjectStore],
    steps: Sequence[ObjectStep],
    archive_to: dict[str, str],
    on_step: Callable[[int], None] | None = None,
) -> StepTotals:
    """Carry out object steps in order, continuing past a failed object.

    A backup whose data object could not be deleted or archived keeps the rest of its steps
    (its manifest above all) for the next run, so a backup never loses its manifest first.
    """
    totals = StepTotals()
    broken_backups: set[tuple[str, str]] = set()
    for index, step in enumerate(steps):
        store = stores[step.region]
        unit = (step.region, step.backup_id) if step.backup_id else None
        if unit is not None and unit in broken_backups:
            continue
        try:
            if step.action == "delete":
                store.delete(step.key)
                totals.deleted += 1
                totals.bytes_deleted += step.size
            elif step.action == "archive":
                store.set_storage_class(step.key, archive_to.get(step.region, "ARCHIVE"))
                totals.archived += 1
                totals.bytes_archived += step.size
            else:
                original, compressed = compress_object(store, step.key)
                totals.compressed += 1
                totals.bytes_compressed += original
                totals.bytes_saved += max(0, original - compressed)
        except Exception as exc:
            totals.errors.append(f"{step.region}: {step.action} {step.key}: {exc}"[:400])
            if unit is not None:
                broken_backups.add(unit)
        if on_step is not None:
            on_step(index + 1)
    return totals
