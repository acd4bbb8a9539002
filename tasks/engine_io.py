"""Plumbing shared by the `mydumper` and `physical` engines.

Backups: an engine is a *producer* of one byte stream (a tar of mydumper's directory, or
mariadb-backup's xbstream). It goes through the same one-pass compress + hash + fan-out as
mysqldump (tasks.backup_stream.stream_to_stores), and `finish()` is the `before_commit`
check: no region commits unless the tool exited cleanly and the table facts are recorded.

Restores: one region's copy is downloaded (hashed on the way, tasks.restore._Download),
decompressed and handed to a consumer (tar extraction, `mbstream -x`). When the consumer
fails, the rest of the object is read to tell a corrupt copy (BackupVerificationError: try
another region) from a bad backup (RestoreLoadError).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import IO, Protocol

from tasks.backup_stream import StreamResult, stream_to_stores
from tasks.compression import TruncatedStream, new_decompressor
from tasks.errors import (
    DatabaseAuthError,
    DatabaseNotFound,
    DatabaseUnreachable,
    ExternalCommandError,
    RestoreLoadError,
    StorageError,
)
from tasks.manifest import BackupManifest, Codec, StoredObject
from tasks.mysql import SnapshotFacts
from tasks.storage import ObjectStore


def tool_error(tool: str, stderr: bytes, returncode: int, database: str) -> Exception:
    """A dump tool's failure as the project's typed error (auth, unreachable, missing db, ...)."""
    text = stderr.decode(errors="replace").strip()
    if "1049" in text or "Unknown database" in text:
        return DatabaseNotFound(f"database {database!r} does not exist: {text[-300:]}")
    if "1045" in text or "Access denied" in text:
        return DatabaseAuthError(f"{tool} was refused: {text[-300:]}; fix the connection block")
    if "2003" in text or "2002" in text or "Lost connection" in text:
        return DatabaseUnreachable(f"{tool} lost the server: {text[-300:]}")
    return ExternalCommandError(
        f"{tool} exited with {returncode}"
        + (" (killed)" if returncode < 0 else "")
        + (f": {text[-500:]}" if text else "")
    )


class EngineBackup(Protocol):
    """A running backup tool whose output is one stream (a context manager)."""

    object_name: str
    facts: SnapshotFacts | None

    def start(self) -> IO[bytes]:
        """Run what must run before streaming; return the stream to compress and store."""
        ...

    def stream_progress(self, raw_bytes: int) -> None:
        """Progress callback while the stream is read (`raw_bytes` read so far)."""
        ...

    def finish(self) -> None:
        """After the last byte: raise unless the tool succeeded and the facts are recorded."""
        ...


def stream_engine_backup(
    producer: EngineBackup,
    stores: list[ObjectStore],
    key: str,
    codec: Codec,
    level: int,
) -> StreamResult:
    """Compress the producer's stream once into every region; commit only after `finish()`."""
    return stream_to_stores(
        producer.start(),
        stores,
        key,
        codec,
        level,
        on_progress=producer.stream_progress,
        before_commit=producer.finish,
    )


# -- restores ----------------------------------------------------------------------------------


class RestoreTimes(Protocol):
    """The parts of tasks.restore.RestoreStats this module fills in."""

    compressed_bytes: int
    uncompressed_bytes: int
    download_s: float
    decompress_s: float


def restore_object_into(
    store: ObjectStore,
    manifest: BackupManifest,
    obj: StoredObject,
    consume: Callable[[Iterator[bytes]], None],
    stats: RestoreTimes,
    on_progress: Callable[[int, int], None] | None = None,
    decompress: bool = True,
) -> None:
    """Download `obj` from one region, verify its sha256, and feed it decompressed to `consume`.

    With `decompress=False` the consumer gets the compressed bytes (it runs a decompressing
    process itself, which must fail on a truncated or corrupt stream).

    Raises:
        BackupVerificationError: the copy differs from the manifest (try another region).
        StorageError: the region could not be read.
        RestoreLoadError: the copy matches the manifest but `consume` failed on it.
    """
    from tasks.restore import _check_object, _Download

    download = _Download(store, manifest.object_key(obj.name))
    download.start()
    decompressor = new_decompressor(manifest.codec)
    exhausted = False

    def chunks() -> Iterator[bytes]:
        nonlocal exhausted
        for chunk in download:
            stats.compressed_bytes = download.size
            if on_progress is not None:
                on_progress(download.size, obj.size)
            if not decompress:
                yield chunk
                continue
            started = time.perf_counter()
            out = decompressor.decompress(chunk)
            stats.decompress_s += time.perf_counter() - started
            if out:
                yield out
        exhausted = True
        if decompress and not decompressor.complete:
            raise TruncatedStream(f"{manifest.codec} stream ends inside a frame")

    try:
        try:
            consume(chunks())
        except StorageError:
            raise
        except Exception as exc:
            if not exhausted:
                download.drain()  # is the copy corrupt (another region may be good)?
            _check_object(download, obj)
            if isinstance(exc, RestoreLoadError):
                raise
            raise RestoreLoadError(
                f"{store.uri(download.key)} matches the manifest but could not be restored: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not exhausted:
            download.drain()  # the consumer stopped early (a tar's end-of-archive padding)
        _check_object(download, obj)
    finally:
        download.cancel()
        stats.download_s += download.wait_s
        stats.uncompressed_bytes += (
            decompressor.bytes_out if decompress else obj.uncompressed_size or 0
        )
