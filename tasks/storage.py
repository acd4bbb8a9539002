"""Object storage behind one interface: GCS buckets (production) and local folders.

Everything that touches a backup destination goes through `ObjectStore`; `open_store`
picks the implementation from a destination block. Writers only make an object visible
when `commit()` is called, so an interrupted upload never leaves a complete-looking object.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tasks.errors import DestinationMissing, StorageError

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud.storage import Bucket

    from blocks.backup_store import GcsDestination, LocalFolderDestination

READ_CHUNK = 4 * 1024 * 1024
PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object."""

    key: str
    size: int
    updated: datetime
    storage_class: str | None = None


class ObjectWriter(ABC):
    """A streaming writer whose object appears only on `commit()`."""

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...


class ObjectStore(ABC):
    """One regional destination."""

    region: str

    @abstractmethod
    def uri(self, key: str) -> str:
        """A human-readable address of `key` (gs://... or file://...)."""

    @abstractmethod
    def check_ready(self) -> None:
        """Raise DestinationMissing when the bucket/folder does not exist."""

    @abstractmethod
    def open_writer(self, key: str) -> ObjectWriter: ...

    @abstractmethod
    def open_reader(self, key: str) -> IO[bytes]: ...

    @abstractmethod
    def list_objects(self, prefix: str) -> list[ObjectInfo]: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete `key`; deleting a missing object is not an error."""

    @abstractmethod
    def set_storage_class(self, key: str, storage_class: str) -> None:
        """Move `key` to another storage class (archive)."""

    def list_partials(self, prefix: str) -> list[ObjectInfo]:
        """Unfinished uploads under `prefix` that are visible as objects (crashed writers).

        Their keys end in `PARTIAL_SUFFIX`; `delete(key)` removes one. GCS keeps an unfinished
        resumable upload invisible (and expires it), so buckets have none.
        """
        return []

    def read_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as reader:
            return reader.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        writer = self.open_writer(key)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    def exists(self, key: str) -> bool:
        return any(info.key == key for info in self.list_objects(key))

    def iter_chunks(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        with self.open_reader(key) as reader:
            while chunk := reader.read(chunk_size):
                yield chunk


# -- local folders -----------------------------------------------------------------------------


class _LocalWriter(ObjectWriter):
    def __init__(self, final_path: Path) -> None:
        self._final = final_path
        self._partial = final_path.with_name(final_path.name + PARTIAL_SUFFIX)
        self._final.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = open(self._partial, "wb")  # noqa: SIM115

    def write(self, data: bytes) -> None:
        assert self._file is not None, "writer already closed"
        self._file.write(data)

    def commit(self) -> None:
        assert self._file is not None, "writer already closed"
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self._partial, self._final)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._partial.unlink(missing_ok=True)


class LocalFolderStore(ObjectStore):
    """A folder on disk; keys are relative paths. Partial uploads end in `.partial`."""

    def __init__(self, region: str, root: str | Path, create: bool = True) -> None:
        self.region = region
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StorageError(f"object key {key!r} escapes the destination folder")
        return path

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def check_ready(self) -> None:
        if not self.root.is_dir():
            raise DestinationMissing(
                f"region {self.region}: folder {self.root} does not exist; create it or fix "
                "the destination's path"
            )

    def open_writer(self, key: str) -> ObjectWriter:
        self.check_ready()
        return _LocalWriter(self._path(key))

    def open_reader(self, key: str) -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise StorageError(f"region {self.region}: object {key} not found") from exc

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        if not self.root.is_dir():
            raise DestinationMissing(f"region {self.region}: folder {self.root} does not exist")
        base = self.root / prefix
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return []
        infos = []
        for path in start.rglob("*"):
            if not path.is_file() or path.name.endswith(PARTIAL_SUFFIX):
                continue
            if path.name.startswith(".") and path.name.endswith(".archived"):
                continue  # the storage-class marker of another object, not an object
            key = path.relative_to(self.root).as_posix()
            if not key.startswith(prefix):
                continue
            stat = path.stat()
            storage_class = "ARCHIVE" if (path.parent / f".{path.name}.archived").exists() else None
            infos.append(
                ObjectInfo(
                    key=key,
                    size=stat.st_size,
                    updated=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                    storage_class=storage_class or "STANDARD",
                )
            )
        return sorted(infos, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        (path.parent / f".{path.name}.archived").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            # Remove now-empty parent folders up to the root.
            parent = path.parent
            while parent != self.root and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def set_storage_class(self, key: str, storage_class: str) -> None:
        path = self._path(key)
        marker = path.parent / f".{path.name}.archived"
        if storage_class.upper() == "STANDARD":
            marker.unlink(missing_ok=True)
        else:
            marker.write_text(storage_class)

    def list_partials(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return []
        infos = []
        for path in start.rglob(f"*{PARTIAL_SUFFIX}"):
            key = path.relative_to(self.root).as_posix()
            with contextlib.suppress(FileNotFoundError):  # committed or aborted meanwhile
                if key.startswith(prefix) and path.is_file():
                    stat = path.stat()
                    updated = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
                    infos.append(ObjectInfo(key=key, size=stat.st_size, updated=updated))
        return sorted(infos, key=lambda info: info.key)

    def remove_partials(self) -> int:
        """Delete leftover `.partial` files from crashed writers; returns how many."""
        count = 0
        for path in self.root.rglob("*.partial"):
            path.unlink(missing_ok=True)
            count += 1
        return count

    def wipe(self) -> None:
        """Delete the whole folder (tests and local resets only)."""
        shutil.rmtree(self.root, ignore_errors=True)


# -- Google Cloud Storage ----------------------------------------------------------------------


def gcs_client(destination: GcsDestination):  # type: ignore[no-untyped-def]
    """A storage client built by the destination's credentials block (the only source)."""
    return destination.gcs_bucket.gcp_credentials.get_cloud_storage_client()


class _GcsWriter(ObjectWriter):
    def __init__(self, bucket: Bucket, key: str, chunk_size: int, retry: Retry) -> None:
        blob = bucket.blob(key, chunk_size=chunk_size)
        # BlobWriter drives a resumable upload; the object exists only once it is closed.
        self._writer = blob.open("wb", ignore_flush=True, retry=retry)
        self._key = key

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def commit(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        # Dropping an unfinished resumable session leaves no object behind.
        with contextlib.suppress(Exception):
            self._writer._upload_and_transport = None  # type: ignore[attr-defined]


class GcsStore(ObjectStore):
    """A GCS bucket through the real google-cloud-storage client."""

    def __init__(self, destination: GcsDestination) -> None:
        self.region = destination.region
        self.destination = destination
        self.bucket_name = destination.gcs_bucket.bucket
        self.prefix = (destination.gcs_bucket.bucket_folder or "").strip("/")
        self._client = gcs_client(destination)
        self._bucket = self._client.bucket(self.bucket_name)
        self.chunk_size = destination.chunk_size_mib * 1024 * 1024
        from google.cloud.storage.retry import DEFAULT_RETRY

        # Every call gives up on transient errors after the destination's deadline.
        self._retry = DEFAULT_RETRY.with_deadline(destination.retry_deadline_seconds)

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(key)}"

    def check_ready(self) -> None:
        from google.api_core import exceptions as gexc

        try:
            exists = self._bucket.exists(timeout=30, retry=self._retry)
        except gexc.GoogleAPIError as exc:
            raise StorageError(f"region {self.region}: bucket {self.bucket_name}: {exc}") from exc
        if not exists:
            raise DestinationMissing(
                f"region {self.region}: bucket gs://{self.bucket_name} does not exist; create it "
                "or fix the destination's gcs_bucket.bucket"
            )

    def open_writer(self, key: str) -> ObjectWriter:
        return _GcsWriter(self._bucket, self._name(key), self.chunk_size, self._retry)

    def open_reader(self, key: str) -> IO[bytes]:
        from google.api_core import exceptions as gexc

        blob = self._bucket.blob(self._name(key), chunk_size=self.chunk_size)
        try:
            return blob.open("rb", chunk_size=READ_CHUNK * 4, retry=self._retry)  # type: ignore[no-any-return]
        except gexc.NotFound as exc:
            raise StorageError(f"region {self.region}: object {self.uri(key)} not found") from exc

    def read_bytes(self, key: str) -> bytes:
        from google.api_core import exceptions as gexc

        try:
            return self._bucket.blob(self._name(key)).download_as_bytes(
                timeout=60, retry=self._retry
            )  # type: ignore[no-any-return]
        except gexc.NotFound as exc:
            raise StorageError(f"region {self.region}: object {self.uri(key)} not found") from exc

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        from google.api_core import exceptions as gexc

        try:
            blobs = list(
                self._client.list_blobs(
                    self.bucket_name, prefix=self._name(prefix), retry=self._retry
                )
            )
        except gexc.NotFound as exc:
            raise DestinationMissing(
                f"region {self.region}: bucket gs://{self.bucket_name} does not exist"
            ) from exc
        return sorted(
            (
                ObjectInfo(
                    key=self._key(blob.name),
                    size=int(blob.size or 0),
                    updated=blob.updated or datetime.now(UTC),
                    storage_class=blob.storage_class,
                )
                for blob in blobs
            ),
            key=lambda info: info.key,
        )

    def delete(self, key: str) -> None:
        from google.api_core import exceptions as gexc

        with contextlib.suppress(gexc.NotFound):
            self._bucket.blob(self._name(key)).delete(timeout=60, retry=self._retry)

    def set_storage_class(self, key: str, storage_class: str) -> None:
        blob = self._bucket.blob(self._name(key))
        blob.update_storage_class(storage_class, retry=self._retry)
        if (blob.storage_class or "").upper() != storage_class.upper():
            # Some GCS API servers (gcp-storage-emulator) keep the old class on rewrite but
            # accept it as a metadata patch; real GCS changes it in the rewrite above.
            blob.storage_class = storage_class
            blob.patch(timeout=60, retry=self._retry)


def open_store(destination: LocalFolderDestination | GcsDestination) -> ObjectStore:
    """The ObjectStore for a destination block."""
    if destination.kind == "local":
        return LocalFolderStore(destination.region, destination.path)  # type: ignore[union-attr]
    return GcsStore(destination)  # type: ignore[arg-type]
