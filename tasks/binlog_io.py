"""Moving one archived segment between a region and a local file, verified both ways."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tasks.binlog_manifest import SegmentManifest
from tasks.compression import TruncatedStream, new_decompressor
from tasks.errors import BackupVerificationError
from tasks.storage import ObjectStore


def _local_disk_error(exc: Exception, dest_dir: Path) -> bool:
    """True when writing the local file failed (not the stored copy's fault)."""
    filename = getattr(exc, "filename", None)
    return isinstance(exc, OSError) and str(filename or "").startswith(str(dest_dir))


def download_segment(store: ObjectStore, segment: SegmentManifest, dest_dir: Path) -> Path:
    """Write `segment`'s raw binary log (decompressed) to `dest_dir/<file>` and return it.

    Both the stored bytes and the raw bytes are checked against the manifest; a partly
    written file never keeps the final name.

    Raises:
        BackupVerificationError: the copy in this region is missing, corrupt or truncated
            (the caller falls back to another region).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / segment.file
    partial = final.with_name(final.name + ".partial")
    stored_hash, raw_hash = hashlib.sha256(), hashlib.sha256()
    stored_size = raw_size = 0
    decompressor = new_decompressor(segment.codec)
    uri = store.uri(segment.object_key)
    try:
        with open(partial, "wb") as out:
            for chunk in store.iter_chunks(segment.object_key):
                stored_hash.update(chunk)
                stored_size += len(chunk)
                raw = decompressor.decompress(chunk)
                raw_hash.update(raw)
                raw_size += len(raw)
                out.write(raw)
            if not decompressor.complete:
                raise TruncatedStream(f"{uri}: zstd stream ends inside a frame")
            out.flush()
            os.fsync(out.fileno())
        expected = segment.object
        if (stored_size, stored_hash.hexdigest()) != (expected.size, expected.sha256):
            raise BackupVerificationError(
                f"{uri}: stored bytes differ from the segment manifest (size {stored_size} vs "
                f"{expected.size}, sha256 {stored_hash.hexdigest()[:12]}… vs "
                f"{expected.sha256[:12]}…); use another region's copy"
            )
        if (raw_size, raw_hash.hexdigest()) != (segment.raw_size, segment.raw_sha256):
            raise BackupVerificationError(
                f"{uri}: decompressed {segment.file} differs from the segment manifest "
                f"({raw_size} bytes vs {segment.raw_size}); use another region's copy"
            )
    except Exception as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, BackupVerificationError) or _local_disk_error(exc, dest_dir):
            raise
        raise BackupVerificationError(f"{uri}: cannot read segment {segment.file}: {exc}") from exc
    os.replace(partial, final)
    return final


def download_segment_any(
    stores: list[ObjectStore], segment: SegmentManifest, dest_dir: Path
) -> tuple[Path, str]:
    """`download_segment` from the first region whose copy verifies; returns (path, region).

    Raises:
        BackupVerificationError: naming every region's failure.
    """
    errors = []
    for store in stores:
        try:
            return download_segment(store, segment, dest_dir), store.region
        except BackupVerificationError as exc:
            errors.append(str(exc))
    raise BackupVerificationError(
        f"no region holds a good copy of {segment.sequence}/{segment.file}: " + "; ".join(errors)
    )
