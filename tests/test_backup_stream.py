"""The one-pass fan-out and the read-back verification, on real local folders."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tasks.backup_stream import stream_to_stores, verify_copies
from tasks.compression import decompress_stream
from tasks.errors import BackupVerificationError, StorageError
from tasks.storage import LocalFolderStore, ObjectWriter

PAYLOAD = b"".join(
    f"INSERT INTO t VALUES ({i}, '{os.urandom(8).hex()}');\n".encode() for i in range(60_000)
)


def _stores(tmp_path: Path) -> list[LocalFolderStore]:
    return [LocalFolderStore("a", tmp_path / "a"), LocalFolderStore("b", tmp_path / "b")]


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_every_region_gets_identical_bytes_that_decompress_to_the_source(
    tmp_path: Path, codec: str
) -> None:
    stores = _stores(tmp_path)
    seen: list[int] = []
    result = stream_to_stores(io.BytesIO(PAYLOAD), stores, "k/dump", codec, on_progress=seen.append)  # type: ignore[arg-type]
    assert result.uncompressed_size == len(PAYLOAD) and seen[-1] == len(PAYLOAD)
    copies = [s.read_bytes("k/dump") for s in stores]
    assert copies[0] == copies[1] and len(copies[0]) == result.size
    assert b"".join(decompress_stream(codec, [copies[0]])) == PAYLOAD  # type: ignore[arg-type]
    checks = verify_copies(stores, "k/dump", result, codec)  # type: ignore[arg-type]
    assert [c.ok for c in checks] == [True, True]
    assert [c.decompressed for c in checks] == [True, False], "decompress once, not per region"


def test_a_flipped_byte_in_one_region_is_named(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    result = stream_to_stores(io.BytesIO(PAYLOAD), stores, "k/dump", "zstd")
    path = tmp_path / "b" / "k" / "dump"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BackupVerificationError) as info:
        verify_copies(stores, "k/dump", result, "zstd")
    assert str(tmp_path / "b") in str(info.value) and str(tmp_path / "a") not in str(info.value)


def test_a_truncated_primary_copy_fails_verification(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    result = stream_to_stores(io.BytesIO(PAYLOAD), stores, "k/dump", "zstd")
    path = tmp_path / "a" / "k" / "dump"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BackupVerificationError, match="differs from what was written"):
        verify_copies(stores, "k/dump", result, "zstd")


def test_a_failing_region_aborts_every_region(tmp_path: Path) -> None:
    class BrokenWriter(ObjectWriter):
        def write(self, data: bytes) -> None:
            raise OSError("disk full")

        def commit(self) -> None:
            raise AssertionError("must not commit")

        def abort(self) -> None:
            pass

    class BrokenStore(LocalFolderStore):
        def open_writer(self, key: str) -> ObjectWriter:
            return BrokenWriter()

    stores = [LocalFolderStore("a", tmp_path / "a"), BrokenStore("b", tmp_path / "b")]
    with pytest.raises(StorageError, match=r"region.*b: disk full"):
        stream_to_stores(io.BytesIO(PAYLOAD), stores, "k/dump", "zstd")
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "region a kept a partial object"


def test_before_commit_failure_leaves_nothing(tmp_path: Path) -> None:
    def refuse() -> None:
        raise RuntimeError("dump tool exited 2")

    with pytest.raises(RuntimeError, match="exited 2"):
        stream_to_stores(
            io.BytesIO(PAYLOAD), _stores(tmp_path), "k/dump", "zstd", before_commit=refuse
        )
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
