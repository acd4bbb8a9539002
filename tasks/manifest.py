"""The backup manifest and the object-key layout (pure: no I/O, no Prefect).

A backup lives under `<kind>/<source>/<YYYY>/<MM>/<DD>/<backup-id>/`. Its data objects are
written first; `manifest.json` is written last in each region and is the commit point: a
prefix without a readable manifest is an incomplete backup that restores and retention skip.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from tasks.object_diff import ObjectCatalog

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")

Codec = Literal["zstd", "gzip"]
Engine = Literal["mysqldump", "mydumper", "physical", "mongo-archive", "influx-lp"]


class StoredObject(BaseModel):
    """One data object of a backup, as written."""

    name: str = Field(description="File name inside the backup's folder.")
    size: int = Field(ge=0, description="Compressed size in bytes.")
    sha256: str = Field(description="SHA-256 of the compressed bytes.")
    uncompressed_size: int | None = Field(default=None, ge=0)


class TableFacts(BaseModel):
    """What the source table held at the backup's consistent point."""

    rows: int = Field(ge=0)
    checksum: int | None = Field(default=None, description="CHECKSUM TABLE value, if taken.")
    engine: str | None = None
    longest_row_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Most bytes of BLOB/TEXT/JSON/spatial data in one row (tables with such "
        "columns): a restore checks the server's max_allowed_packet against it before loading.",
    )
    sha256: str | None = Field(
        default=None,
        description="MongoDB: sha256 over the raw BSON of the collection's documents in _id order.",
    )


class RegionCopy(BaseModel):
    """Where one region holds the backup."""

    region: str
    uri: str = Field(description="Address of the backup's folder in that region.")


class DumpFile(BaseModel):
    """One file of a mydumper dump directory, as archived."""

    name: str = Field(description="File name inside the dump directory (no folders).")
    size: int = Field(ge=0, description="Uncompressed size in bytes.")


class MydumperDetails(BaseModel):
    """What myloader needs to restore a `mydumper` backup (a tar of the dump directory)."""

    archive: Literal["tar"] = Field(
        default="tar", description="The dump directory is one tar stream inside the object."
    )
    files: list[DumpFile] = Field(description="Every file of the dump directory.")
    threads: int = Field(ge=1, description="mydumper threads (myloader may use another count).")
    rows_per_chunk: int = Field(ge=1, description="mydumper --rows: rows per data chunk file.")
    source_database: str = Field(description="Database name inside the dump (myloader -s).")


class PhysicalDetails(BaseModel):
    """What a restore needs to extract, prepare and start a `physical` backup."""

    tool: Literal["mariadb-backup", "xtrabackup"] = Field(description="The backup tool.")
    flavor: Literal["mariadb", "mysql"] = Field(description="Server family (picks the tools).")
    stream_format: Literal["xbstream"] = "xbstream"
    databases: list[str] = Field(description="Schemas copied (the database plus `mysql`).")
    from_lsn: int | None = Field(default=None, description="Redo log copied from this LSN.")
    to_lsn: int | None = Field(default=None, description="... up to this LSN (consistent point).")
    exact_by: Literal["binlog-position", "backup-stage-order", "none"] = Field(
        default="none",
        description="How the row counts/checksums were proven to match the backup's point.",
    )


class MeasurementFacts(BaseModel):
    """One InfluxDB measurement as exported: field values (one line each) and their digest."""

    points: int = Field(ge=0, description="Field values exported (one line-protocol line each).")
    sha256: str = Field(description="sha256 over the measurement's lines sorted by (time, line).")


class InfluxDetails(BaseModel):
    """What a restore needs to know about an `influx-lp` backup (line protocol, ns precision)."""

    bucket: str = Field(description="Source bucket.")
    org: str = Field(description="Source organization.")
    start: datetime = Field(description="Export range start (inclusive).")
    stop: datetime = Field(description="Export range stop (exclusive): the consistent point.")
    window_seconds: int = Field(ge=1, description="Export window (one query per window).")
    measurements: dict[str, MeasurementFacts] = Field(default_factory=dict)
    mode: Literal["full", "incremental"] = Field(
        default="full",
        description="full: every point; incremental: points stamped at or after `start` (the "
        "previous backup's consistent point minus an overlap), restored on top of its chain.",
    )
    base_backup_id: str | None = Field(
        default=None, description="Incremental: the full backup its chain starts from."
    )
    previous_backup_id: str | None = Field(
        default=None, description="Incremental: the backup (full or incremental) it follows."
    )


class BackupManifest(BaseModel):
    """Everything a restore, a drill or retention needs to know about one backup."""

    format_version: int = FORMAT_VERSION
    backup_id: str
    kind: Literal["mysql", "mongodb", "influxdb"] = "mysql"
    engine: Engine = "mysqldump"
    source: str = Field(description="Logical source name (the key prefix).")
    database: str = Field(description="Database that was backed up.")
    server_version: str = ""
    binlog_file: str | None = None
    binlog_position: int | None = None
    gtid: str | None = None
    started_at: datetime
    consistent_at: datetime = Field(description="The point in time the data reflects (RPO).")
    finished_at: datetime
    codec: Codec = "zstd"
    objects: list[StoredObject]
    tables: dict[str, TableFacts] = Field(default_factory=dict)
    views: list[str] = Field(default_factory=list)
    routines: list[str] = Field(default_factory=list)
    catalog: ObjectCatalog | None = Field(
        default=None,
        description="MySQL: the database's defaults, every table's shape and every object's "
        "normalised definition digest (absent in manifests written before it existed).",
    )
    regions: list[RegionCopy] = Field(default_factory=list)
    tool_versions: dict[str, str] = Field(default_factory=dict)
    restore_hints: dict[str, str | int] = Field(
        default_factory=dict, description="Engine-specific facts a restore needs."
    )
    prefix: str = Field(description="Key prefix of the backup's folder (ends with '/').")
    mydumper: MydumperDetails | None = Field(
        default=None, description="Set for engine `mydumper`: the dump directory's layout."
    )
    physical: PhysicalDetails | None = Field(
        default=None, description="Set for engine `physical`: tool, LSNs, copied schemas."
    )
    influxdb: InfluxDetails | None = Field(
        default=None, description="Set for engine `influx-lp`: bucket, range, measurement digests."
    )

    @property
    def total_size(self) -> int:
        return sum(obj.size for obj in self.objects)

    @property
    def total_rows(self) -> int:
        return sum(table.rows for table in self.tables.values())

    @property
    def database_charset(self) -> str | None:
        return self.catalog.charset if self.catalog else None

    @property
    def database_collation(self) -> str | None:
        return self.catalog.collation if self.catalog else None

    def object_key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}{MANIFEST_NAME}"

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()


def validate_source_name(source: str) -> str:
    """Return `source` if it is usable in object keys, else raise ValueError naming the rule."""
    if not SOURCE_NAME.match(source):
        raise ValueError(
            f"source {source!r} is not a valid name: use 1-64 letters, digits, '_', '.', '-' "
            "starting with a letter or digit"
        )
    return source


def new_backup_id(at: datetime) -> str:
    """A backup id that sorts by time: `YYYYmmddTHHMMSSZ-<6 hex>`."""
    return f"{at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def backup_prefix(kind: str, source: str, backup_id: str) -> str:
    """The folder of one backup: `<kind>/<source>/<YYYY>/<MM>/<DD>/<backup-id>/`."""
    if not BACKUP_ID.match(backup_id):
        raise ValueError(f"backup id {backup_id!r} is not of the form YYYYmmddTHHMMSSZ-xxxxxx")
    day = datetime.strptime(backup_id[:8], "%Y%m%d")
    return f"{kind}/{source}/{day:%Y/%m/%d}/{backup_id}/"


def source_prefix(kind: str, source: str) -> str:
    return f"{kind}/{source}/"


def backup_id_from_key(key: str) -> str | None:
    """The backup id a key belongs to, or None if the key is not inside a backup folder."""
    parts = key.split("/")
    for part in parts:
        if BACKUP_ID.match(part):
            return part
    return None


def backup_time(backup_id: str) -> datetime:
    """When a backup started, read from its id."""
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def parse_manifest(data: bytes) -> BackupManifest:
    """Parse a manifest; raises pydantic.ValidationError on anything unreadable."""
    return BackupManifest.model_validate_json(data)
