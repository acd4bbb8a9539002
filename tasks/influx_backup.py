"""Prefect tasks of the InfluxDB backup and restore drill: preflight, export, restore, validate.

Each wraps plain functions from tasks.influx, tasks.backup_stream and tasks.storage; the
manifest is verified and committed with the MySQL backup's tasks (tasks.backup).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Final, cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.influx import InfluxConnection
from tasks.backup import _Progress, io_task
from tasks.backup_stream import ChunkReader, StreamResult, stream_to_stores, verify_copies
from tasks.catalog import scan_backups
from tasks.compression import EXTENSIONS, decompress_stream
from tasks.drill import BackupChoice, DrillMarker, select_backup
from tasks.errors import BackupVerificationError, RestoreTargetRefused, StorageError
from tasks.influx import (
    END_OF_TIME_NS,
    LATEST_NS,
    Digests,
    InfluxSession,
    digest_bucket,
    drill_bucket_description,
    export_lines,
    from_ns,
    load_lines,
    rfc3339,
    to_ns,
)
from tasks.influx_chain import IncrementalStart, backup_chain, incremental_start
from tasks.manifest import (
    BackupManifest,
    Codec,
    InfluxDetails,
    MeasurementFacts,
    RegionCopy,
    StoredObject,
    TableFacts,
    backup_prefix,
)
from tasks.storage import ObjectStore

KIND: Final = "influxdb"
OBJECT_STEM = "points.lp"
SCRATCH_PREFIX = "drill_"
SCRATCH_NAME = re.compile(r"^drill_[a-z0-9_]{1,58}$")
BYTES_PER_POINT = 80  # progress estimate only


@dataclass(frozen=True)
class InfluxSourceFacts:
    """What preflight learned: server version, first day with data, values per measurement."""

    server_version: str
    bucket: str
    first_ns: int
    stop_ns: int
    points: dict[str, int]
    consistent_at: datetime


@dataclass(frozen=True)
class InfluxExport:
    written: StreamResult
    object_name: str
    measurements: dict[str, MeasurementFacts]


@io_task("preflight-influxdb-backup", retries=3, backoff=2)
def preflight_influx(
    conn: InfluxConnection,
    bucket: str,
    stores: list[ObjectStore],
    stop: datetime,
    since: datetime | None = None,
) -> InfluxSourceFacts:
    """Check the server, the bucket and every destination; count values per measurement.

    The export covers every time InfluxDB can store (see EARLIEST_NS, LATEST_NS), from the
    first day holding a point (an incremental: from `since`); `stop` (the backup's start) is
    its consistent point."""
    stop_ns = LATEST_NS
    with InfluxSession(conn) as session:
        version = session.server_version()
        session.require_bucket(bucket)
        if since is None:
            first_ns = session.first_day_ns(bucket, stop_ns) or to_ns(stop)
        else:
            first_ns = to_ns(since)
        points = session.measurement_counts(bucket, first_ns, stop_ns)
        beyond = session.measurement_counts(bucket, LATEST_NS, END_OF_TIME_NS)
    if beyond:
        raise BackupVerificationError(
            f"bucket {bucket!r} holds {sum(beyond.values())} value(s) in the last microsecond "
            f"InfluxDB can store (at or after {rfc3339(LATEST_NS)}), which a backup cannot "
            "cover exactly; move or delete them, then back up again"
        )
    for store in stores:
        store.check_ready()
    get_run_logger().info(
        "bucket %s on %s (%s): %d measurement(s), %d values since %s; regions %s",
        bucket,
        conn.url,
        version,
        len(points),
        sum(points.values()),
        from_ns(first_ns).date(),
        ", ".join(s.region for s in stores),
    )
    return InfluxSourceFacts(version, bucket, first_ns, stop_ns, points, stop)


@io_task("stream-influxdb-export", retries=2, backoff=5)
def stream_export(
    conn: InfluxConnection,
    facts: InfluxSourceFacts,
    stores: list[ObjectStore],
    prefix: str,
    codec: Codec,
    level: int,
    window_seconds: int,
) -> InfluxExport:
    """Export the bucket window by window as line protocol, compressed once, into every region."""
    object_name = f"{OBJECT_STEM}{EXTENSIONS[codec]}"
    digests = Digests()
    progress = _Progress(sum(facts.points.values()) * BYTES_PER_POINT, facts.bucket)
    try:
        with InfluxSession(conn) as session:
            lines = export_lines(
                session,
                facts.bucket,
                facts.first_ns,
                facts.stop_ns,
                window_seconds * 10**9,
                digests,
            )
            written = stream_to_stores(
                cast(IO[bytes], ChunkReader(lines)),
                stores,
                f"{prefix}{object_name}",
                codec,
                level,
                on_progress=progress,
            )
    finally:
        progress.close()
    get_run_logger().info(
        "wrote %s: %.1f MB from %.1f MB, %d values, sha256 %s…",
        object_name,
        written.size / 1e6,
        written.uncompressed_size / 1e6,
        sum(digests.counts.values()),
        written.sha256[:12],
    )
    return InfluxExport(written, object_name, digests.facts())


def build_influx_manifest(
    *,
    backup_id: str,
    source: str,
    conn: InfluxConnection,
    facts: InfluxSourceFacts,
    export: InfluxExport,
    codec: Codec,
    stores: list[ObjectStore],
    started_at: datetime,
    window_seconds: int,
    chain: IncrementalStart | None = None,
) -> BackupManifest:
    """The manifest of a finished, verified InfluxDB backup (consistent at its start); an
    incremental's (`chain` given) names its base and the backup it follows."""
    prefix = backup_prefix(KIND, source, backup_id)
    written = export.written
    return BackupManifest(
        backup_id=backup_id,
        kind=KIND,
        engine="influx-lp",
        source=source,
        database=facts.bucket,
        server_version=facts.server_version,
        started_at=started_at,
        consistent_at=facts.consistent_at,
        finished_at=datetime.now(UTC),
        codec=codec,
        objects=[
            StoredObject(
                name=export.object_name,
                size=written.size,
                sha256=written.sha256,
                uncompressed_size=written.uncompressed_size,
            )
        ],
        tables={name: TableFacts(rows=m.points) for name, m in export.measurements.items()},
        regions=[RegionCopy(region=s.region, uri=s.uri(prefix)) for s in stores],
        tool_versions={
            "influxdb-client": __import__("influxdb_client").__version__,
            "python-zstandard": __import__("zstandard").__version__,
            "vibebench-ops": "0.1.0",
        },
        restore_hints={"precision": "ns", "format": "line-protocol"},
        prefix=prefix,
        influxdb=InfluxDetails(
            bucket=facts.bucket,
            org=conn.org,
            start=from_ns(facts.first_ns),
            stop=from_ns(facts.stop_ns),
            window_seconds=window_seconds,
            measurements=export.measurements,
            mode="full" if chain is None else "incremental",
            base_backup_id=None if chain is None else chain.base_id,
            previous_backup_id=None if chain is None else chain.previous.backup_id,
        ),
    )


# -- restore drill ----------------------------------------------------------------------------


def scratch_bucket_name(source: str, backup_id: str) -> str:
    """`drill_<source>_<backup-id>`, lower case, `[a-z0-9_]` only, at most 64 characters."""
    name = SCRATCH_PREFIX + re.sub(r"[^a-z0-9]+", "_", f"{source}_{backup_id}".lower()).strip("_")
    if len(name) <= 64:
        return name
    return f"{name[:55]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def check_scratch_bucket(name: str, source_bucket: str) -> str:
    """Return `name` if a drill may restore into it, else raise RestoreTargetRefused."""
    if name == source_bucket:
        raise RestoreTargetRefused(
            f"scratch_database {name!r} is the source bucket; a drill restores only into a bucket of "
            "its own: leave scratch_database empty (drill_<source>_<backup-id>)"
        )
    if not SCRATCH_NAME.match(name):
        raise RestoreTargetRefused(
            f"scratch_database {name!r} is not a drill bucket name: use 'drill_' followed by 1-58 "
            "lower-case letters, digits or '_' (or leave it empty)"
        )
    return name


@io_task("check-influxdb-scratch-bucket", retries=2, backoff=2)
def check_scratch_absent(conn: InfluxConnection, scratch: str) -> None:
    """Refuse a scratch bucket that already exists: it is not this drill's to replace."""
    with InfluxSession(conn) as session:
        if session.bucket_exists(scratch):
            raise RestoreTargetRefused(
                f"scratch_database {scratch!r} already exists on {conn.url} (a crashed drill's or "
                "someone else's); choose another scratch_database or delete that bucket by hand"
            )


@dataclass(frozen=True)
class InfluxBackupSearch:
    choice: BackupChoice | None
    unreachable: dict[str, str]
    chain: tuple[BackupManifest, ...] = ()  # the full base first, the choice last
    holders: dict[str, tuple[str, ...]] | None = None  # backup id -> regions, preferred first

    def regions_of(self, backup_id: str) -> tuple[str, ...]:
        return (self.holders or {}).get(backup_id, ())


@io_task("find-previous-influxdb-backup", retries=2, backoff=2)
def find_incremental_start(
    stores: list[ObjectStore], source: str, bucket: str, overlap_seconds: int
) -> IncrementalStart:
    """The backup an incremental follows: the newest committed one in any region.

    Raises:
        NoBaseBackup: there is none (run a full backup first).
    """
    committed: list[BackupManifest] = []
    for store in stores:
        committed += [e.manifest for e in scan_backups(store, source, KIND) if e.manifest]
    start = incremental_start(committed, source, bucket, timedelta(seconds=overlap_seconds))
    get_run_logger().info(
        "incremental after %s (base %s): points stamped from %s",
        start.previous.backup_id,
        start.base_id,
        start.since.isoformat(),
    )
    return start


@io_task("find-influxdb-backup", retries=2, backoff=2)
def find_influx_backup(
    stores: dict[str, ObjectStore], order: list[str], source: str, selector: str
) -> InfluxBackupSearch:
    """Read every region's influxdb catalog and pick the backup (unreachable regions noted)."""
    committed: dict[str, list[BackupManifest]] = {}
    unreachable: dict[str, str] = {}
    uncommitted: set[str] = set()
    for region in order:
        try:
            entries = scan_backups(stores[region], source, KIND)
        except Exception as exc:
            unreachable[region] = f"{type(exc).__name__}: {exc}"[:400]
            continue
        committed[region] = [e.manifest for e in entries if e.manifest is not None]
        uncommitted |= {e.backup_id for e in entries if e.manifest is None}
    if len(unreachable) == len(order):
        raise StorageError("no backup region could be listed: " + "; ".join(unreachable.values()))
    choice = select_backup(committed, selector, order, uncommitted)
    by_id: dict[str, BackupManifest] = {}
    holders: dict[str, tuple[str, ...]] = {}
    for region in order:
        for manifest in committed.get(region, ()):
            by_id.setdefault(manifest.backup_id, manifest)
            holders[manifest.backup_id] = (*holders.get(manifest.backup_id, ()), region)
    chain = tuple(backup_chain(by_id, choice.manifest)) if choice else ()
    return InfluxBackupSearch(choice, unreachable, chain, holders)


@dataclass(frozen=True)
class InfluxRestoreStats:
    region: str
    points: int
    compressed_bytes: int
    verify_s: float
    load_s: float


@task(cache_policy=NO_CACHE, name="restore-influxdb-copy")
def restore_influx_copy(
    conn: InfluxConnection,
    manifest: BackupManifest,
    store: ObjectStore,
    scratch: str,
    batch_lines: int,
    drill_run: str = "local",
    fresh: bool = True,
) -> InfluxRestoreStats:
    """Verify one region's copy (size, sha256, decompress), then load it into a fresh `scratch`
    (created with the drill's marker as its description, for cleanup-drills); with
    `fresh=False` (an incremental on top of its chain) into the existing `scratch`.

    Raises:
        BackupVerificationError: the copy does not match the manifest (try another region).
    """
    data = manifest.objects[0]
    key = manifest.object_key(data.name)
    clock = time.perf_counter()
    expected = StreamResult(data.size, data.sha256, data.uncompressed_size or 0)
    verify_copies([store], key, expected, manifest.codec)
    verified = time.perf_counter()
    with InfluxSession(conn) as session:
        if fresh:
            session.delete_bucket(scratch)
            marker = DrillMarker(drill_run, manifest.source, manifest.backup_id, datetime.now(UTC))
            session.create_bucket(scratch, description=drill_bucket_description(marker))
        progress = _Progress(manifest.total_rows, f"{manifest.database} into {scratch}", "Loading")
        try:
            with store.open_reader(key) as raw:
                chunks = decompress_stream(manifest.codec, iter(lambda: raw.read(1 << 20), b""))
                points = load_lines(
                    session, scratch, ChunkReader(chunks), batch_lines, on_batch=progress
                )
        finally:
            progress.close()
    get_run_logger().info("loaded %d values from %s into %s", points, store.uri(key), scratch)
    return InfluxRestoreStats(
        store.region, points, data.size, verified - clock, time.perf_counter() - verified
    )


@io_task("validate-influxdb-restore", retries=2, backoff=2)
def validate_influx_restore(
    conn: InfluxConnection, manifest: BackupManifest, scratch: str
) -> list[str]:
    """Counts and sha256 digests per measurement of the scratch bucket against the manifest."""
    details = manifest.influxdb
    assert details is not None
    with InfluxSession(conn) as session:
        restored = digest_bucket(
            session,
            scratch,
            to_ns(details.start),
            to_ns(details.stop),
            details.window_seconds * 10**9,
        )
    problems = []
    for name in sorted(set(details.measurements) | set(restored)):
        want, got = details.measurements.get(name), restored.get(name)
        if want is None or got is None or want.points != got.points:
            problems.append(
                f"measurement {name!r}: {got.points if got else 0} values restored, "
                f"{want.points if want else 0} in the backup"
            )
        elif want.sha256 != got.sha256:
            problems.append(
                f"measurement {name!r}: sha256 {got.sha256[:12]}… differs from the backup's"
            )
    return problems


@task(cache_policy=NO_CACHE, name="drop-influxdb-scratch-bucket")
def drop_scratch_bucket(conn: InfluxConnection, scratch: str) -> bool:
    """Delete the drill's scratch bucket (True when it existed)."""
    with InfluxSession(conn) as session:
        return session.delete_bucket(scratch)
