"""MongoDB: preflight facts, a streamed archive dump, restore into a scratch database, purge.

The one module that talks to MongoDB (pymongo); every client comes from a MongoConnection
block. The archive format and its digests live in tasks.mongo_archive (pure).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymongo
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from blocks.mongo import MongoConnection
from tasks.backup import _Progress, io_task
from tasks.backup_stream import ChunkReader, StreamResult, stream_to_stores
from tasks.compression import EXTENSIONS, decompress_stream
from tasks.drill import DRILL_PREFIX, DrillMarker
from tasks.errors import (
    BackupVerificationError,
    DatabaseAuthError,
    DatabaseNotFound,
    DatabaseUnreachable,
    RestoreLoadError,
    RestoreTargetRefused,
    RetentionPolicyInvalid,
    VibeOpsError,
)
from tasks.manifest import BackupManifest, Codec, RegionCopy, StoredObject, TableFacts
from tasks.mongo_archive import (
    ARCHIVE_FORMAT,
    ArchiveParser,
    CollectionDigest,
    CollectionParity,
    compare_collections,
    encode_record,
    header_line,
    index_specs_from_json,
    index_specs_to_json,
    split_documents,
)
from tasks.storage import ObjectStore

RAW = CodecOptions(document_class=RawBSONDocument)
# Dates outside Python's years 1-9999 (a server stores any int64) decode as DatetimeMS.
ANY_DATE: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
AUTH_FAILED = 18
MAX_INSERT_BATCH = 500
MARKER_COLLECTION = "_vibeops_drill"
SYSTEM_DATABASES = ("admin", "local", "config")
ARCHIVE_NAME = "dump.bson"


def describe_error(
    exc: PyMongoError, conn: MongoConnection, field: str = "connection_block"
) -> VibeOpsError:
    """A typed error naming the block field to fix (never the password)."""
    where = f"MongoDB at {conn.host}:{conn.port}"
    if isinstance(exc, OperationFailure) and exc.code == AUTH_FAILED:
        return DatabaseAuthError(
            f"{field}: {where} refused user {conn.username!r} (auth_source "
            f"{conn.auth_source!r}); fix the block's username, password or auth_source field"
        )
    if isinstance(exc, ConnectionFailure):
        return DatabaseUnreachable(
            f"{field}: {where} is unreachable ({type(exc).__name__}); check the "
            "block's host, port and tls fields, and that the server runs"
        )
    return VibeOpsError(f"{where}: {type(exc).__name__}: {str(exc)[:300]}")


@contextmanager
def mongo_client(
    conn: MongoConnection, field: str = "connection_block"
) -> Iterator[pymongo.MongoClient[Any]]:
    """A client from the block; pymongo errors leave as typed errors naming the field."""
    try:
        with conn.client() as client:
            yield client
    except PyMongoError as exc:
        raise describe_error(exc, conn, field) from exc


# -- preflight ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MongoFacts:
    """What the source database holds before the dump."""

    server_version: str
    collections: dict[str, int]
    """Collection name -> estimated document count."""
    views: list[str] = field(default_factory=list)
    indexes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def read_source_facts(conn: MongoConnection, database: str) -> MongoFacts:
    """Server version, collections and document counts of `database`.

    Raises:
        DatabaseNotFound: the database does not exist (naming the `database` field).
    """
    with mongo_client(conn) as client:
        version = str(client.server_info()["version"])
        names = client.list_database_names()
        if database not in names:
            raise DatabaseNotFound(
                f"database: {database!r} does not exist on {conn.host}:{conn.port} "
                f"(it has {sorted(n for n in names if n not in SYSTEM_DATABASES)}); fix the "
                "database parameter"
            )
        db = client.get_database(database, codec_options=ANY_DATE)
        collections, views, indexes = {}, [], {}
        for info in db.list_collections():
            name = info["name"]
            if info.get("type") == "view":
                views.append(name)
            elif not name.startswith("system."):
                collections[name] = db[name].estimated_document_count()
                indexes[name] = [
                    {k: v for k, v in spec.items() if k != "v"}
                    for spec in db[name].list_indexes()
                    if spec["name"] != "_id_"
                ]
    return MongoFacts(version, dict(sorted(collections.items())), sorted(views), indexes)


@io_task("preflight-mongodb-backup", retries=3, backoff=2)
def preflight_mongo(conn: MongoConnection, database: str, stores: list[ObjectStore]) -> MongoFacts:
    """Check the source and every destination before anything is written."""
    facts = read_source_facts(conn, database)
    for store in stores:
        store.check_ready()
    get_run_logger().info(
        "source %s on %s:%s (MongoDB %s): %d collections, ~%d documents; regions %s",
        database,
        conn.host,
        conn.port,
        facts.server_version,
        len(facts.collections),
        sum(facts.collections.values()),
        ", ".join(s.region for s in stores),
    )
    return facts


# -- dump --------------------------------------------------------------------------------------


def archive_chunks(
    client: pymongo.MongoClient[Any],
    database: str,
    facts: MongoFacts,
    digests: dict[str, CollectionDigest],
    batch_size: int = 1000,
    chunk_bytes: int = 1 << 20,
) -> Iterator[bytes]:
    """The archive of `database` in chunks; fills `digests` (count, sha256) as it goes."""
    yield header_line(
        {
            "database": database,
            "collections": list(facts.collections),
            "indexes": index_specs_to_json(facts.indexes),
            "server_version": facts.server_version,
        }
    )
    pending = bytearray()
    for name in facts.collections:
        digest = digests.setdefault(name, CollectionDigest())
        encoded = name.encode()
        cursor = client[database][name].find_raw_batches(
            {}, sort=[("_id", 1)], batch_size=batch_size
        )
        for batch in cursor:
            for raw in split_documents(batch):
                digest.add(raw)
                pending += encode_record(encoded, raw)
            if len(pending) >= chunk_bytes:
                yield bytes(pending)
                pending.clear()
    if pending:
        yield bytes(pending)


@dataclass(frozen=True)
class MongoDump:
    """What the dump wrote and what its manifest records."""

    written: StreamResult
    object_name: str
    consistent_at: datetime
    collections: dict[str, TableFacts]


@io_task("stream-mongodb-dump", retries=2, backoff=5)
def stream_mongo_dump(
    conn: MongoConnection,
    database: str,
    facts: MongoFacts,
    stores: list[ObjectStore],
    prefix: str,
    codec: Codec,
    level: int,
    batch_size: int = 1000,
) -> MongoDump:
    """Stream one database's archive, compressed once, into every region (committed later
    by the manifest). A standalone server has no cross-collection snapshot: each collection
    is read in `_id` order as of its own read; `consistent_at` is when the dump started."""
    object_name = f"{ARCHIVE_NAME}{EXTENSIONS[codec]}"
    digests: dict[str, CollectionDigest] = {}
    consistent_at = datetime.now(UTC)
    progress = _Progress(max(sum(facts.collections.values()), 1) * 200, database)
    try:
        with mongo_client(conn) as client:
            source = ChunkReader(archive_chunks(client, database, facts, digests, batch_size))
            written = stream_to_stores(
                source,  # type: ignore[arg-type]
                stores,
                f"{prefix}{object_name}",
                codec,
                level,
                on_progress=progress,
            )
    finally:
        progress.close()
    dump = MongoDump(
        written, object_name, consistent_at, {n: d.facts() for n, d in digests.items()}
    )
    get_run_logger().info(
        "wrote %s: %.1f MB from %.1f MB (%.1fx), %d documents, sha256 %s…",
        dump.object_name,
        dump.written.size / 1e6,
        dump.written.uncompressed_size / 1e6,
        dump.written.uncompressed_size / max(dump.written.size, 1),
        sum(f.rows for f in dump.collections.values()),
        dump.written.sha256[:12],
    )
    return dump


def build_mongo_manifest(
    *,
    backup_id: str,
    source: str,
    database: str,
    prefix: str,
    facts: MongoFacts,
    dump: MongoDump,
    codec: Codec,
    stores: list[ObjectStore],
    started_at: datetime,
) -> BackupManifest:
    """The manifest of a finished, verified MongoDB backup."""
    return BackupManifest(
        backup_id=backup_id,
        kind="mongodb",
        engine="mongo-archive",
        source=source,
        database=database,
        server_version=facts.server_version,
        started_at=started_at,
        consistent_at=dump.consistent_at,
        finished_at=datetime.now(UTC),
        codec=codec,
        objects=[
            StoredObject(
                name=dump.object_name,
                size=dump.written.size,
                sha256=dump.written.sha256,
                uncompressed_size=dump.written.uncompressed_size,
            )
        ],
        tables=dump.collections,
        views=facts.views,
        regions=[RegionCopy(region=s.region, uri=s.uri(prefix)) for s in stores],
        tool_versions={
            "dump": f"pymongo {pymongo.version}",
            "python-zstandard": __import__("zstandard").__version__,
            "vibebench-ops": "0.1.0",
        },
        restore_hints={"archive": ARCHIVE_FORMAT, "consistency": "per-collection"},
        prefix=prefix,
    )


# -- restore -----------------------------------------------------------------------------------


def recreate_scratch(client: pymongo.MongoClient[Any], scratch: str) -> None:
    """Drop a drill's leftover `scratch` (an earlier attempt); refuse anyone else's database."""
    if scratch not in client.list_database_names():
        return
    if MARKER_COLLECTION not in client[scratch].list_collection_names():
        raise RestoreTargetRefused(
            f"scratch_database {scratch!r} already exists and was not created by a drill "
            "(no _vibeops_drill collection); choose another name or drop it by hand"
        )
    client.drop_database(scratch)


@dataclass
class MongoRestoreStats:
    """What one restore of one region's copy did, and where its time went."""

    region: str
    objects: list[str]
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    documents: int = 0
    download_s: float = 0.0
    load_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.download_s + self.load_s


class _Hashed:
    """Chunks of one stored object, hashed and counted as they pass, timed."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.digest = hashlib.sha256()
        self.size = 0
        self.seconds = 0.0

    def __iter__(self) -> Iterator[bytes]:
        while True:
            clock = time.perf_counter()
            chunk = next(self.chunks, None)
            self.seconds += time.perf_counter() - clock
            if chunk is None:
                return
            self.digest.update(chunk)
            self.size += len(chunk)
            yield chunk


def restore_archive(
    conn: MongoConnection,
    scratch: str,
    manifest: BackupManifest,
    store: ObjectStore,
    drill_marker: dict[str, Any],
    batch_size: int = MAX_INSERT_BATCH,
    on_progress: Callable[[int], None] | None = None,
) -> MongoRestoreStats:
    """Stream one region's archive into `scratch` in batches of at most 500 documents;
    `on_progress` gets the archive bytes loaded so far.

    Raises:
        RestoreTargetRefused: `scratch` is the backup's source database or a system database.
        BackupVerificationError: the stored copy does not match the manifest (corrupt).
        RestoreLoadError: MongoDB refused the documents.
    """
    if scratch in (manifest.database, *SYSTEM_DATABASES):
        raise RestoreTargetRefused(
            f"scratch_database {scratch!r} is the source database; a drill restores only into "
            "a database of its own: leave scratch_database empty (drill_<source>_<backup-id>)"
        )
    batch_size = min(batch_size, MAX_INSERT_BATCH)
    data = manifest.objects[0]
    key = manifest.object_key(data.name)
    stats = MongoRestoreStats(store.region, [store.uri(key)])
    hashed = _Hashed(store.iter_chunks(key))
    clock = time.perf_counter()
    with mongo_client(conn) as client:
        recreate_scratch(client, scratch)
        db = client.get_database(scratch, codec_options=RAW)
        db[MARKER_COLLECTION].insert_one(drill_marker)
        try:
            parser = ArchiveParser(decompress_stream(manifest.codec, hashed))
            for collection in parser.header.get("collections", []):
                db.create_collection(collection)
            batch: list[RawBSONDocument] = []
            current: str | None = None
            for name, raw in parser.records():
                if name != current or len(batch) >= batch_size:
                    _insert(db, current, batch)
                    batch, current = [], name
                    if on_progress is not None:
                        on_progress(stats.uncompressed_bytes)
                batch.append(RawBSONDocument(raw, RAW))
                stats.documents += 1
                stats.uncompressed_bytes += len(raw)
            _insert(db, current, batch)
            for collection, specs in index_specs_from_json(
                parser.header.get("indexes", {})
            ).items():
                if specs:
                    db[collection].database.command("createIndexes", collection, indexes=specs)
        except OperationFailure as exc:
            raise RestoreLoadError(f"loading into {scratch!r} failed: {exc}"[:600]) from exc
        except (VibeOpsError, PyMongoError):
            raise
        except Exception as exc:  # zstd and framing errors: the bytes are not what was written
            raise BackupVerificationError(
                f"{store.uri(key)}: cannot be read as a {manifest.codec} archive: {exc}"
            ) from exc
        finally:
            stats.compressed_bytes = hashed.size
    if hashed.size != data.size or hashed.digest.hexdigest() != data.sha256:
        raise BackupVerificationError(
            f"{store.uri(key)}: size {hashed.size} sha256 {hashed.digest.hexdigest()[:12]}… "
            f"differs from the manifest ({data.size}, {data.sha256[:12]}…)"
        )
    stats.download_s = hashed.seconds
    stats.load_s = time.perf_counter() - clock - hashed.seconds
    return stats


def _insert(db: Any, collection: str | None, batch: list[RawBSONDocument]) -> None:
    if collection is not None and batch:
        db[collection].insert_many(batch, ordered=True, bypass_document_validation=True)


def collection_digests(conn: MongoConnection, database: str) -> dict[str, CollectionDigest]:
    """Count and sha256 of every collection's raw BSON in `_id` order (marker excluded)."""
    digests: dict[str, CollectionDigest] = {}
    with mongo_client(conn) as client:
        db = client[database]
        for name in sorted(db.list_collection_names()):
            if name == MARKER_COLLECTION or name.startswith("system."):
                continue
            digest = digests.setdefault(name, CollectionDigest())
            for batch in db[name].find_raw_batches({}, sort=[("_id", 1)], batch_size=1000):
                for raw in split_documents(batch):
                    digest.add(raw)
    return digests


@task(name="validate-mongodb-restore", cache_policy=NO_CACHE)
def validate_mongo_restore(
    conn: MongoConnection, scratch: str, manifest: BackupManifest
) -> list[CollectionParity]:
    """Read the scratch database back and compare counts and sha256 with the manifest."""
    return compare_collections(manifest.tables, collection_digests(conn, scratch))


@task(name="drop-mongodb-scratch", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def drop_scratch(conn: MongoConnection, scratch: str, protected: list[str]) -> bool:
    """Drop a drill's scratch database (never a protected one, never one without a marker)."""
    if scratch in protected or scratch in SYSTEM_DATABASES:
        raise RestoreTargetRefused(f"scratch_database {scratch!r} is protected; not dropped")
    with mongo_client(conn) as client:
        if scratch not in client.list_database_names():
            return False
        if MARKER_COLLECTION not in client[scratch].list_collection_names():
            return False
        client.drop_database(scratch)
    return True


@task(name="restore-mongodb-copy", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def restore_mongo_copy(
    conn: MongoConnection,
    scratch: str,
    manifest: BackupManifest,
    store: ObjectStore,
    drill_marker: dict[str, Any],
    batch_size: int = MAX_INSERT_BATCH,
) -> MongoRestoreStats:
    """Restore one region's copy into `scratch` (see restore_archive)."""
    progress = _Progress(manifest.objects[0].uncompressed_size or 1, scratch, "Restoring into")
    try:
        stats = restore_archive(
            conn, scratch, manifest, store, drill_marker, batch_size, on_progress=progress
        )
    finally:
        progress.close()
    get_run_logger().info(
        "restored %d documents into %s from %s in %.1f s",
        stats.documents,
        scratch,
        store.region,
        stats.seconds,
    )
    return stats


# -- cleanup of leftovers (cleanup-drills) -----------------------------------------------------

CLEANUP_FIELD = "mongo_connection_block"


def drill_marker_of(document: dict[str, Any] | None) -> DrillMarker | None:
    """The DrillMarker of a `_vibeops_drill` document (None: no readable creation time).

    `created_at` as the drill writes it; else the marker's ObjectId time."""
    if not document:
        return None
    created = document.get("created_at")
    if not isinstance(created, datetime):
        oid = document.get("_id")
        created = getattr(oid, "generation_time", None)
    if not isinstance(created, datetime):
        return None
    keep = document.get("keep_until")
    return DrillMarker(
        drill_run=str(document.get("drill_run", "?")),
        source=str(document.get("source", "")),
        backup_id=str(document.get("backup_id", "")),
        created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
        keep_until=(keep if keep.tzinfo else keep.replace(tzinfo=UTC))
        if isinstance(keep, datetime)
        else None,
        status=str(document.get("status", "restoring")),
    )


def _read_marker(client: pymongo.MongoClient[Any], name: str) -> DrillMarker | None:
    db = client[name]
    if MARKER_COLLECTION not in db.list_collection_names():
        return None
    return drill_marker_of(db[MARKER_COLLECTION].find_one({}))


def read_mongo_drill_markers(conn: MongoConnection) -> dict[str, DrillMarker | None]:
    """Every `drill_*` database with its drill marker (None: no readable `_vibeops_drill`)."""
    with mongo_client(conn, CLEANUP_FIELD) as client:
        names = [n for n in client.list_database_names() if n.startswith(DRILL_PREFIX)]
        return {name: _read_marker(client, name) for name in sorted(names)}


def drop_drill_database(conn: MongoConnection, name: str, planned: DrillMarker) -> bool:
    """Drop a leftover drill database if it still carries the marker it was planned with
    (a drill that reused the name since is left alone); True when dropped."""
    if name in SYSTEM_DATABASES or not name.startswith(DRILL_PREFIX):
        raise RestoreTargetRefused(f"{name!r} is not a drill database; not dropped")
    with mongo_client(conn, CLEANUP_FIELD) as client:
        if name not in client.list_database_names():
            return False
        current = _read_marker(client, name)
        same = current is not None and (current.drill_run, current.created_at) == (
            planned.drill_run,
            planned.created_at,
        )
        if not same:
            return False
        client.drop_database(name)
    return True


# -- retention ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiredDocuments:
    """A collection rule's facts at its cutoff."""

    matching: int
    total: int
    avg_size: int


def count_expired_documents(
    conn: MongoConnection, database: str, collection: str, time_field: str, cutoff: datetime
) -> ExpiredDocuments:
    """How many documents have `time_field` before `cutoff` (a BSON date), of how many.

    Raises:
        RetentionPolicyInvalid: the collection does not exist (names the rule's fields).
    """
    with mongo_client(conn) as client:
        db = client[database]
        if collection not in db.list_collection_names():
            raise RetentionPolicyInvalid(
                f"collection {database}.{collection} does not exist on {conn.host}:{conn.port}; "
                "fix the rule's database/collection fields or disable the rule"
            )
        coll = db[collection]
        matching = coll.count_documents({time_field: {"$lt": cutoff}})
        total = coll.count_documents({})
        avg = 0
        if matching:
            sample = list(coll.find_raw_batches({}, limit=100))
            sizes = [len(raw) for batch in sample for raw in split_documents(batch)]
            avg = sum(sizes) // max(len(sizes), 1)
    return ExpiredDocuments(matching, total, avg)


@dataclass(frozen=True)
class DocumentPurge:
    """What a collection purge did; `finished` is False when the time budget ran out."""

    deleted: int
    batches: int
    finished: bool
    last_id: Any = None


def purge_expired_documents(
    conn: MongoConnection,
    database: str,
    collection: str,
    time_field: str,
    cutoff: datetime,
    batch_size: int = 1000,
    pause_seconds: float = 0.02,
    time_budget_seconds: float = 3600.0,
    on_progress: Callable[[int], None] | None = None,
) -> DocumentPurge:
    """Delete documents with `time_field` before `cutoff`, one `_id` range at a time.

    Each batch reads the next `batch_size` expired `_id`s in order and deletes that `_id`
    range (still filtered by the cutoff, so younger documents inside it stay), then pauses.
    """
    expired = {time_field: {"$lt": cutoff}}
    deadline = time.monotonic() + time_budget_seconds
    deleted = batches = 0
    last: Any = None
    with mongo_client(conn) as client:
        coll = client[database][collection]
        while True:
            query = expired if last is None else {**expired, "_id": {"$gt": last}}
            ids = [
                d["_id"] for d in coll.find(query, {"_id": 1}, sort=[("_id", 1)], limit=batch_size)
            ]
            if not ids:
                return DocumentPurge(deleted, batches, True, last)
            result = coll.delete_many({**expired, "_id": {"$gte": ids[0], "$lte": ids[-1]}})
            deleted += result.deleted_count
            batches += 1
            last = ids[-1]
            if on_progress is not None:
                on_progress(deleted)
            if time.monotonic() >= deadline:
                return DocumentPurge(deleted, batches, False, last)
            time.sleep(pause_seconds)
