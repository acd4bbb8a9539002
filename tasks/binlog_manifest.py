"""The manifest of one archived binary log segment and its object keys (pure: no I/O).

A segment is one closed binary log file. Its zstd object is written first in every region;
`<file>.manifest.json` is written last and is the commit point, as for base backups.
Layout: `mysql/<source>/binlog/<sequence>/<file>.zst` and `<file>.manifest.json`, where
`<sequence>` = `<server_id>-<creation time of the sequence's first file, YYYYmmddTHHMMSSZ>`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from tasks.manifest import RegionCopy, StoredObject

SEGMENT_FORMAT_VERSION = 1
SEGMENT_MANIFEST_SUFFIX = ".manifest.json"
BINLOG_FILE = re.compile(r"^(?P<base>[A-Za-z0-9_.-]+)\.(?P<index>\d{6,})$")
SEQUENCE = re.compile(r"^(?P<server_id>\d+)-(?P<created>\d{8}T\d{6}Z)$")


class SegmentManifest(BaseModel):
    """Everything replay, the recovery-point catalog and retention need about one segment."""

    format_version: int = SEGMENT_FORMAT_VERSION
    kind: Literal["mysql-binlog"] = "mysql-binlog"
    source: str = Field(description="Logical source name (the key prefix).")
    sequence: str = Field(
        description="<server_id>-<first file's creation time>; new after RESET MASTER."
    )
    server_id: int = Field(ge=0)
    file: str = Field(description="Binary log file name on the server, e.g. binlog.000042.")
    index: int = Field(ge=0, description="The file's number (42).")
    start_position: int = Field(default=4, ge=4, description="Archived from (4 = whole file).")
    end_position: int = Field(ge=4, description="Archived up to: the file's size on the server.")
    raw_size: int = Field(ge=0, description="Bytes of the raw binary log file.")
    raw_sha256: str = Field(description="SHA-256 of the raw binary log file.")
    object: StoredObject = Field(description="The compressed object (<file>.zst).")
    codec: Literal["zstd"] = "zstd"
    gtid_list_start: str = Field(
        default="", description="The file's Gtid_list event (binlog state at its start)."
    )
    gtid_last: str = Field(
        default="",
        description="Binlog state after the file's last transaction (== start if none), "
        "in the same domain-server-seq form as gtid_list_start.",
    )
    transactions: int = Field(default=0, ge=0, description="Transactions (GTIDs) in the file.")
    first_event_at: datetime | None = Field(default=None, description="First commit (UTC, s).")
    last_event_at: datetime | None = Field(default=None, description="Last commit (UTC, s).")
    file_created_at: datetime | None = Field(
        default=None, description="When the server created the file (its first event)."
    )
    archived_at: datetime
    regions: list[RegionCopy] = Field(default_factory=list)
    prefix: str = Field(description="mysql/<source>/binlog/<sequence>/")

    @property
    def object_key(self) -> str:
        return f"{self.prefix}{self.object.name}"

    @property
    def manifest_key(self) -> str:
        return segment_manifest_key(self.prefix, self.file)

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()


def binlog_root(source: str) -> str:
    """Where every segment of `source` lives: `mysql/<source>/binlog/`."""
    return f"mysql/{source}/binlog/"


def segment_prefix(source: str, sequence: str) -> str:
    """The folder of one sequence: `mysql/<source>/binlog/<sequence>/`."""
    if not SEQUENCE.match(sequence):
        raise ValueError(f"sequence {sequence!r} is not of the form <server_id>-YYYYmmddTHHMMSSZ")
    return f"{binlog_root(source)}{sequence}/"


def segment_manifest_key(prefix: str, file: str) -> str:
    return f"{prefix}{file}{SEGMENT_MANIFEST_SUFFIX}"


def sequence_name(server_id: int, first_file_created_at: datetime) -> str:
    """`<server_id>-<YYYYmmddTHHMMSSZ>` of a sequence whose first archived file was created then."""
    return f"{server_id}-{first_file_created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def binlog_index(file: str) -> int:
    """The number of a binary log file name (`binlog.000042` -> 42).

    Raises:
        ValueError: the name has no numeric extension.
    """
    match = BINLOG_FILE.match(file)
    if not match:
        raise ValueError(f"{file!r} is not a binary log file name like binlog.000042")
    return int(match.group("index"))


def parse_segment_manifest(data: bytes) -> SegmentManifest:
    """Parse a segment manifest; raises pydantic.ValidationError on anything unreadable."""
    return SegmentManifest.model_validate_json(data)
