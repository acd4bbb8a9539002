"""Hand-made segment and base manifests for chain tests (the bytes are not real binlogs)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import zstandard

from tasks.binlog_manifest import SegmentManifest, segment_prefix, sequence_name
from tasks.manifest import BackupManifest, StoredObject, backup_prefix
from tasks.storage import ObjectStore

T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
SEQ = sequence_name(1, T0 - timedelta(days=1))


def segment(
    index: int,
    start_seq: int,
    last_seq: int,
    created: datetime,
    sequence: str = SEQ,
    last_at: datetime | None = None,
) -> SegmentManifest:
    file = f"binlog.{index:06d}"
    return SegmentManifest(
        source="app",
        sequence=sequence,
        server_id=1,
        file=file,
        index=index,
        end_position=1000,
        raw_size=1000,
        raw_sha256="0" * 64,
        object=StoredObject(name=f"{file}.zst", size=10, sha256="1" * 64, uncompressed_size=1000),
        gtid_list_start=f"0-1-{start_seq}" if start_seq else "",
        gtid_last=f"0-1-{last_seq}" if last_seq else "",
        transactions=last_seq - start_seq,
        first_event_at=created if last_seq > start_seq else None,
        last_event_at=(last_at or created + timedelta(minutes=4)) if last_seq > start_seq else None,
        file_created_at=created,
        archived_at=created + timedelta(minutes=5),
        prefix=segment_prefix("app", sequence),
    )


def base(file: str, position: int, gtid: str, at: datetime, source: str = "app") -> BackupManifest:
    backup_id = f"{at:%Y%m%dT%H%M%SZ}-abcdef"
    return BackupManifest(
        backup_id=backup_id,
        source=source,
        database=source,
        binlog_file=file,
        binlog_position=position,
        gtid=gtid,
        started_at=at,
        consistent_at=at,
        finished_at=at + timedelta(minutes=1),
        objects=[],
        prefix=backup_prefix("mysql", source, backup_id),
    )


def five_minute_segments(
    first_index: int, count: int, start: datetime, seq0: int = 100
) -> list[SegmentManifest]:
    """Files rotated every 5 minutes from `start`, 10 transactions each."""
    return [
        segment(
            first_index + i, seq0 + 10 * i, seq0 + 10 * (i + 1), start + timedelta(minutes=5 * i)
        )
        for i in range(count)
    ]


def store_segment(store: ObjectStore, seg: SegmentManifest, raw: bytes) -> SegmentManifest:
    packed = zstandard.ZstdCompressor().compress(raw)
    seg = seg.model_copy(
        update={
            "raw_size": len(raw),
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
            "object": StoredObject(
                name=f"{seg.file}.zst",
                size=len(packed),
                sha256=hashlib.sha256(packed).hexdigest(),
                uncompressed_size=len(raw),
            ),
        }
    )
    store.write_bytes(seg.object_key, packed)
    store.write_bytes(seg.manifest_key, seg.to_json())
    return seg
