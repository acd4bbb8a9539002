"""One-pass streaming of a dump into every region, and read-back verification.

The dump is read once, compressed once and hashed once; each region gets the same bytes
through its own writer thread, so a slow region does not serialise the others. Nothing
becomes visible in a region until every region has received the whole stream.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from tasks.compression import decompressed_size, new_compressor
from tasks.errors import BackupVerificationError, StorageError
from tasks.manifest import Codec
from tasks.storage import ObjectStore, ObjectWriter

READ_SIZE = 1 << 20
QUEUE_DEPTH = 4
_DONE = object()


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (a dump generated in Python, a
    decompressed download, tarfile's stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._view = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        while not len(self._view):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._view = memoryview(chunk)
        count = min(len(buffer), len(self._view))
        buffer[:count] = self._view[:count]
        self._view = self._view[count:]
        return count


@dataclass(frozen=True)
class StreamResult:
    """What was written to every region."""

    size: int
    sha256: str
    uncompressed_size: int


class _RegionWriter(threading.Thread):
    """Drains a queue of chunks into one region's ObjectWriter."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        super().__init__(name=f"upload-{store.region}", daemon=True)
        self.store = store
        self.key = key
        self.chunks: queue.Queue[object] = queue.Queue(maxsize=QUEUE_DEPTH)
        self.error: BaseException | None = None
        self.writer: ObjectWriter | None = None

    def run(self) -> None:
        try:
            self.writer = self.store.open_writer(self.key)
            while True:
                chunk = self.chunks.get()
                if chunk is _DONE:
                    return
                self.writer.write(chunk)  # type: ignore[arg-type]
        except BaseException as exc:
            self.error = exc
            # Keep draining so the producer never blocks on a dead region.
            while self.chunks.get() is not _DONE:
                pass

    def put(self, chunk: bytes) -> None:
        self.chunks.put(chunk, timeout=600)


class _Hasher(threading.Thread):
    """sha256 of the compressed stream, off the main thread (hashlib releases the GIL)."""

    def __init__(self) -> None:
        super().__init__(name="sha256", daemon=True)
        self.digest = hashlib.sha256()
        self.chunks: queue.Queue[object] = queue.Queue(maxsize=QUEUE_DEPTH)

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not _DONE:
            self.digest.update(chunk)  # type: ignore[arg-type]


F_SETPIPE_SZ = 1031  # fcntl constant (Linux)


def _widen_pipe(source: IO[bytes]) -> None:
    """Give a pipe 1 MiB of buffer so the producer keeps running while we compress."""
    with contextlib.suppress(AttributeError, OSError, ValueError, io.UnsupportedOperation):
        fcntl.fcntl(source.fileno(), F_SETPIPE_SZ, 1 << 20)


def stream_to_stores(
    source: IO[bytes],
    stores: list[ObjectStore],
    key: str,
    codec: Codec,
    level: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> StreamResult:
    """Compress `source` once and write it to `key` in every store at the same time.

    `before_commit` runs after the last byte and before any region commits; it raises to
    abort (e.g. when the dump tool exited non-zero).

    Raises:
        StorageError: a region failed; no region is left with the object.
    """
    compressor = new_compressor(codec, level)
    _widen_pipe(source)
    hasher = _Hasher()
    hasher.start()
    regions = [_RegionWriter(store, key) for store in stores]
    for region in regions:
        region.start()
    size = raw_size = 0
    pending = bytearray()

    def send(data: bytes) -> None:
        nonlocal size
        hasher.chunks.put(data, timeout=600)
        size += len(data)
        for region in regions:
            region.put(data)

    committed = False
    try:
        while chunk := source.read(READ_SIZE):
            raw_size += len(chunk)
            pending += compressor.compress(chunk)
            if len(pending) >= READ_SIZE:
                send(bytes(pending))
                pending.clear()
            if any(region.error for region in regions):
                break
            if on_progress is not None:
                on_progress(raw_size)
        pending += compressor.flush()
        if pending and not any(region.error for region in regions):
            send(bytes(pending))
        for region in regions:
            region.put(_DONE)  # type: ignore[arg-type]
        hasher.chunks.put(_DONE, timeout=600)
        for region in regions:
            region.join(timeout=3600)
        hasher.join(timeout=600)
        failed = [r for r in regions if r.error is not None or r.writer is None]
        if failed:
            details = "; ".join(f"{r.store.region}: {r.error}" for r in failed)
            raise StorageError(f"upload of {key} failed in region(s) {details}") from failed[
                0
            ].error
        if before_commit is not None:
            before_commit()
        for region in regions:
            assert region.writer is not None
            region.writer.commit()
        committed = True
    finally:
        if hasher.is_alive():
            with contextlib.suppress(queue.Full):
                hasher.chunks.put(_DONE, timeout=60)
        if not committed:
            for region in regions:
                if region.is_alive():
                    with contextlib.suppress(queue.Full):
                        region.chunks.put_nowait(_DONE)
                if region.writer is not None:
                    with contextlib.suppress(Exception):
                        region.writer.abort()
    return StreamResult(size=size, sha256=hasher.digest.hexdigest(), uncompressed_size=raw_size)


@dataclass(frozen=True)
class RegionCheck:
    """Result of reading one region's copy back."""

    region: str
    uri: str
    size: int
    sha256: str
    ok: bool
    decompressed: bool = False
    error: str | None = None


class _HashingReader:
    """A file-like that counts what is read through it and hashes it on a second core."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.size = 0
        self._hasher = _Hasher()
        self._hasher.start()

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        if data:
            self._hasher.chunks.put(data, timeout=600)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        """The sha256 of everything read; ends the hasher thread."""
        self._hasher.chunks.put(_DONE, timeout=600)
        self._hasher.join(timeout=600)
        return self._hasher.digest.hexdigest()


def _read_back(store: ObjectStore, key: str, codec: Codec | None) -> tuple[int, str, int | None]:
    """(size, sha256, decompressed size or None) of one stored copy, in bounded memory."""
    with store.open_reader(key) as raw:
        reader = _HashingReader(raw)
        try:
            decompressed = decompressed_size(codec, reader) if codec else None
            while reader.read(READ_SIZE):
                pass
        finally:
            digest = reader.hexdigest()
    return reader.size, digest, decompressed


def verify_copies(
    stores: list[ObjectStore], key: str, expected: StreamResult, codec: Codec
) -> list[RegionCheck]:
    """Read every region's copy back (size, sha256) and decompress one matching copy fully.

    The copies are byte-identical when their hashes match, so one full decompression
    proves all of them. Raises BackupVerificationError naming every bad copy.
    """
    results: dict[str, RegionCheck] = {}

    def check(index: int, store: ObjectStore) -> None:
        want_decompress = index == 0
        try:
            size, sha, raw = _read_back(store, key, codec if want_decompress else None)
            ok = size == expected.size and sha == expected.sha256
            error = None
            if ok and raw is not None and raw != expected.uncompressed_size:
                ok, error = (
                    False,
                    f"decompressed to {raw} bytes, expected {expected.uncompressed_size}",
                )
            elif not ok:
                error = f"size {size} sha256 {sha[:12]}… differs from what was written"
            results[store.region] = RegionCheck(
                store.region, store.uri(key), size, sha, ok, raw is not None and ok, error
            )
        except Exception as exc:
            results[store.region] = RegionCheck(
                store.region, store.uri(key), 0, "", False, error=str(exc)
            )

    threads = [threading.Thread(target=check, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=3600)
    checks = [results[s.region] for s in stores]
    if checks[0].ok is False and any(c.ok for c in checks[1:]):
        # The primary copy is bad; prove a good one decompresses before reporting.
        good = next(s for s, c in zip(stores, checks, strict=True) if c.ok)
        try:
            _read_back(good, key, codec)
        except Exception as exc:
            raise BackupVerificationError(f"{good.uri(key)} does not decompress: {exc}") from exc
    bad = [c for c in checks if not c.ok]
    if bad:
        raise BackupVerificationError(
            "read-back verification failed: " + "; ".join(f"{c.uri}: {c.error}" for c in bad)
        )
    return checks
