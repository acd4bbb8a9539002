"""The MongoDB backup archive format and its digests (pure: no I/O, no Prefect).

An archive is one JSON header line, then one record per document, collection by collection,
each collection's documents in `_id` order:

    record = u16 big-endian name length | collection name (UTF-8) | the document's raw BSON

The BSON document carries its own length, so records need no other framing. Per collection,
the manifest records the document count and a sha256 over the raw BSON of its documents in
`_id` order; a restore reads the scratch database back the same way and compares.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from bson import json_util
from bson.codec_options import DatetimeConversion
from bson.json_util import JSONMode, JSONOptions

from tasks.errors import BackupVerificationError
from tasks.manifest import TableFacts

ARCHIVE_FORMAT = "vibeops-mongo-archive/2"
# /1 wrote index specs as plain JSON with sorted keys (a compound index's key order lost);
# /2 writes them as canonical Extended JSON in server order. Both restore.
READABLE_FORMATS = ("vibeops-mongo-archive/1", ARCHIVE_FORMAT)
EXTENDED_JSON = JSONOptions(
    json_mode=JSONMode.CANONICAL,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    tz_aware=True,
    tzinfo=UTC,
)
_NAME_LENGTH = struct.Struct(">H")
_BSON_LENGTH = struct.Struct("<i")


@dataclass
class CollectionDigest:
    """Document count and sha256 of one collection's raw BSON, in `_id` order."""

    count: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, raw: bytes) -> None:
        self.count += 1
        self.digest.update(raw)

    @property
    def sha256(self) -> str:
        return str(self.digest.hexdigest())

    def facts(self) -> TableFacts:
        return TableFacts(rows=self.count, sha256=self.sha256)


def header_line(header: Mapping[str, Any]) -> bytes:
    """The archive's first line: `{"format": ..., ...}` as JSON (key order kept), newline-ended."""
    return json.dumps({"format": ARCHIVE_FORMAT, **header}).encode() + b"\n"


def index_specs_to_json(indexes: Mapping[str, list[dict[str, Any]]]) -> Any:
    """Index specs per collection as canonical Extended JSON: key order and value types kept
    (a compound key {b: -1, a: 1}, a date inside a partialFilterExpression)."""
    return json.loads(json_util.dumps(indexes, json_options=EXTENDED_JSON))


def index_specs_from_json(value: Any) -> dict[str, list[dict[str, Any]]]:
    """The inverse of index_specs_to_json (plain JSON of /1 archives reads the same way)."""
    specs: dict[str, list[dict[str, Any]]] = json_util.loads(
        json.dumps(value), json_options=EXTENDED_JSON
    )
    return specs


def split_documents(batch: bytes) -> Iterator[bytes]:
    """The documents of a raw BSON batch (concatenated documents), one by one."""
    offset = 0
    while offset < len(batch):
        (length,) = _BSON_LENGTH.unpack_from(batch, offset)
        yield batch[offset : offset + length]
        offset += length


def encode_record(collection: bytes, raw: bytes) -> bytes:
    """One archive record; `collection` is the UTF-8 name."""
    return _NAME_LENGTH.pack(len(collection)) + collection + raw


class ArchiveParser:
    """Reads an archive from decompressed chunks: `header`, then `records()`."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._offset = 0
        line = self._read_line()
        try:
            self.header: dict[str, Any] = json.loads(line)
        except ValueError as exc:
            raise BackupVerificationError(f"archive header is not JSON: {exc}") from exc
        if self.header.get("format") not in READABLE_FORMATS:
            raise BackupVerificationError(
                f"archive format {self.header.get('format')!r} is not one of {READABLE_FORMATS}"
            )

    def _fill(self, size: int) -> bool:
        while len(self._buffer) - self._offset < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            del self._buffer[: self._offset]
            self._offset = 0
            self._buffer += chunk
        return True

    def _take(self, size: int) -> bytes:
        if not self._fill(size):
            raise BackupVerificationError("archive ends in the middle of a record (truncated)")
        data = bytes(self._buffer[self._offset : self._offset + size])
        self._offset += size
        return data

    def _read_line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n", self._offset)
            if end >= 0:
                line = bytes(self._buffer[self._offset : end])
                self._offset = end + 1
                return line
            if not self._fill(len(self._buffer) - self._offset + 1):
                raise BackupVerificationError("archive has no header line")

    def records(self) -> Iterator[tuple[str, bytes]]:
        """(collection, raw BSON document) in archive order."""
        while self._fill(1):
            (name_length,) = _NAME_LENGTH.unpack(self._take(_NAME_LENGTH.size))
            name = self._take(name_length).decode()
            length_bytes = self._take(_BSON_LENGTH.size)
            (length,) = _BSON_LENGTH.unpack(length_bytes)
            if length < 5 or length > 48_000_000:
                raise BackupVerificationError(f"archive record of {name!r} has length {length}")
            yield name, length_bytes + self._take(length - _BSON_LENGTH.size)


@dataclass(frozen=True)
class CollectionParity:
    """One collection's comparison with the manifest."""

    collection: str
    expected_count: int | None
    actual_count: int | None
    expected_sha256: str | None
    actual_sha256: str | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def compare_collections(
    expected: Mapping[str, TableFacts], actual: Mapping[str, CollectionDigest]
) -> list[CollectionParity]:
    """Document counts and content sha256, collection by collection (missing and extra too)."""
    result = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        problem = None
        if want is None:
            problem = "collection not in the manifest"
        elif got is None:
            problem = "collection missing after restore" if want.rows else None
        elif got.count != want.rows:
            problem = f"documents {got.count} != {want.rows} in the manifest"
        elif want.sha256 is not None and got.sha256 != want.sha256:
            problem = f"content sha256 {got.sha256[:12]}… != {want.sha256[:12]}… in the manifest"
        result.append(
            CollectionParity(
                collection=name,
                expected_count=want.rows if want else None,
                actual_count=got.count if got else (0 if want else None),
                expected_sha256=want.sha256 if want else None,
                actual_sha256=got.sha256 if got else None,
                problem=problem,
            )
        )
    return result


_FORBIDDEN_IN_DATABASE = set('/\\. "$*<>:|?')
# The same rule as a pattern, for the form's JSON schema.
MONGO_DATABASE_NAME = r'^[^/\\. "$*<>:|?\x00]{1,63}$'


def validate_database_name(name: str) -> str:
    """Return `name` if MongoDB accepts it as a database name, else ValueError naming the rule."""
    if not name or len(name.encode()) > 63 or _FORBIDDEN_IN_DATABASE & set(name) or "\0" in name:
        raise ValueError(
            f"database {name!r} is not a MongoDB database name: use 1-63 bytes without "
            '/ \\ . space " $ * < > : | ?'
        )
    return name
