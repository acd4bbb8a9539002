"""MongoDB fidelity: the hostile corpus (tests/corpus/mongodb) through the real backup and drill
flows, against the wire-protocol stand-in driven by pymongo. Every document must come back as
the same raw BSON bytes (not merely equal once decoded: 1 == Int64(1) and -0.0 == 0.0 in Python),
and the drill must notice when one value changes its type."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument

from blocks.mongo import MongoConnection
from flows.backup_mongodb import BackupMongoDBParams, backup_mongodb
from flows.forms import params_of
from flows.restore_drill_mongodb import RestoreDrillMongoDBParams, restore_drill_mongodb
from tasks.errors import DrillFailed
from tasks.manifest import BackupManifest
from tasks.mongo import MARKER_COLLECTION, RAW, restore_archive
from tasks.mongo_archive import ArchiveParser, encode_record, header_line, split_documents
from tasks.storage import open_store
from tests.fixtures.docstore_corpus import (
    MongoCorpus,
    load_mongo_corpus,
    retype_element,
    rewrite_stored_copy,
)
from tests.helpers import local_store, save_block

REGIONS = ("local-a", "local-b")
AUTO = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)


@pytest.fixture(autouse=True)
def vibeops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VIBEOPS_HOME", str(home))
    return home


@pytest.fixture
def corpus() -> MongoCorpus:
    return load_mongo_corpus()


@pytest.fixture
def corpus_db(mongo_conn: MongoConnection, corpus: MongoCorpus) -> Iterator[str]:
    """The corpus loaded into its unicode-named database, raw bytes exactly as in the files."""
    with mongo_conn.client() as client:
        client.drop_database(corpus.database)
        db = client.get_database(corpus.database, codec_options=RAW)
        for name, documents in corpus.documents.items():
            db.create_collection(name)
            if documents:
                db[name].insert_many([RawBSONDocument(raw) for raw in documents])
            if corpus.indexes[name]:
                db.command("createIndexes", name, indexes=corpus.indexes[name])
    yield corpus.database
    with mongo_conn.client() as client:
        client.drop_database(corpus.database)


def raw_documents(conn: MongoConnection, database: str) -> dict[str, list[bytes]]:
    """Every collection's documents as the server returns them, raw, in `_id` order."""
    with conn.client() as client:
        db = client[database]
        return {
            name: [
                raw
                for batch in db[name].find_raw_batches({}, sort=[("_id", 1)])
                for raw in split_documents(batch)
            ]
            for name in sorted(db.list_collection_names())
            if name != MARKER_COLLECTION
        }


def raw_indexes(conn: MongoConnection, database: str) -> dict[str, list[bytes]]:
    """Index specs without the version field, encoded as BSON (so key order counts)."""
    with conn.client() as client:
        db = client[database]
        return {
            name: sorted(
                bson.encode({k: v for k, v in spec.items() if k != "v"})
                for spec in db[name].list_indexes()
            )
            for name in sorted(db.list_collection_names())
            if name != MARKER_COLLECTION
        }


def backup(
    conn: MongoConnection, database: str, root: Path
) -> tuple[str, str, str, BackupManifest]:
    conn_block = save_block(conn)
    store_block = save_block(local_store(root, REGIONS))
    source = f"fid{uuid.uuid4().hex[:8]}"
    manifest = backup_mongodb(
        **params_of(
            BackupMongoDBParams(
                source=source,
                database=database,
                connection_block=conn_block,
                store_block=store_block,
            )
        )
    )
    return conn_block, store_block, source, manifest


def drill(conn_block: str, store_block: str, source: str) -> Any:
    return restore_drill_mongodb(
        **params_of(
            RestoreDrillMongoDBParams(
                source=source, drill_server_block=conn_block, store_block=store_block
            )
        ),
        return_state=True,
    )


def test_the_corpus_is_what_its_files_say(
    mongo_conn: MongoConnection, corpus: MongoCorpus, corpus_db: str
) -> None:
    """The stand-in stores every corpus document as sent (so the round trip below means it)."""
    stored = raw_documents(mongo_conn, corpus_db)
    for name, documents in corpus.documents.items():
        assert sorted(stored[name]) == sorted(documents), name
    ids = [bson.decode(raw, AUTO)["_id"] for raw in corpus.documents["types"]]
    assert {"decimal128", "binary", "datetime", "names", "deprecated"} <= {
        i for i in ids if isinstance(i, str)
    }


def test_every_bson_value_restores_bit_exact_through_backup_and_drill(
    tmp_path: Path, mongo_conn: MongoConnection, corpus: MongoCorpus, corpus_db: str
) -> None:
    conn_block, store_block, source, manifest = backup(mongo_conn, corpus_db, tmp_path / "r")
    assert manifest.database == corpus.database
    assert {n: t.rows for n, t in manifest.tables.items()} == {
        n: len(d) for n, d in corpus.documents.items()
    }
    scratch = f"drill_fid_{uuid.uuid4().hex[:8]}"
    store = open_store(local_store(tmp_path / "r", REGIONS).destinations[0])
    try:
        restore_archive(mongo_conn, scratch, manifest, store, {"test": True})
        assert raw_documents(mongo_conn, scratch) == raw_documents(mongo_conn, corpus_db)
    finally:
        with mongo_conn.client() as client:
            client.drop_database(scratch)

    state = drill(conn_block, store_block, source)
    assert state.is_completed(), state
    assert state.result().passed


def test_index_key_order_and_typed_index_options_survive(
    tmp_path: Path, mongo_conn: MongoConnection, corpus_db: str
) -> None:
    """A compound index {b: -1, a: 1} is not {a: 1, b: -1}; a partial filter holds a date."""
    _, _, _, manifest = backup(mongo_conn, corpus_db, tmp_path / "r")
    scratch = f"drill_idx_{uuid.uuid4().hex[:8]}"
    store = open_store(local_store(tmp_path / "r", REGIONS).destinations[0])
    try:
        restore_archive(mongo_conn, scratch, manifest, store, {"test": True})
        restored, source = raw_indexes(mongo_conn, scratch), raw_indexes(mongo_conn, corpus_db)
        restored.pop(MARKER_COLLECTION, None)
        assert restored == source
    finally:
        with mongo_conn.client() as client:
            client.drop_database(scratch)


def rewrite_archive(root: Path, manifest: BackupManifest, edit: Any) -> None:
    """Rewrite the archive's records in every region through `edit(collection, raw) -> raw`
    and re-sign it (a copy that is intact as a file but not what was dumped)."""

    def records(plain: bytes) -> bytes:
        parser = ArchiveParser([plain])
        out = bytearray(header_line({k: v for k, v in parser.header.items() if k != "format"}))
        for name, raw in parser.records():
            out += encode_record(name.encode(), edit(name, raw))
        return bytes(out)

    rewrite_stored_copy(root, REGIONS, manifest, records)


TAMPERS = {
    # (document _id, element, new BSON type, new value bytes)
    "int32 1 becomes int64 1": ("integers", "i32_one", 0x12, struct.pack("<q", 1)),
    "-0.0 becomes 0.0": ("doubles", "neg_zero", 0x01, struct.pack("<d", 0.0)),
    "uuid subtype 4 becomes 3": (
        "binary",
        "uuid",
        0x05,
        struct.pack("<i", 16) + b"\x03" + uuid.UUID("73ffd264-44b3-4c69-90e8-e503699e7103").bytes,
    ),
    "a date becomes an int64": ("datetime", "epoch", 0x12, struct.pack("<q", 0)),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_drill_fails_when_one_value_changes_its_type(
    tmp_path: Path, mongo_conn: MongoConnection, corpus_db: str, tamper: str
) -> None:
    doc_id, element, new_type, new_value = TAMPERS[tamper]
    conn_block, store_block, source, manifest = backup(mongo_conn, corpus_db, tmp_path / "r")
    changed = []

    def edit(collection: str, raw: bytes) -> bytes:
        if collection == "types" and bson.decode(raw, AUTO).get("_id") == doc_id:
            new = retype_element(raw, element, new_type, new_value)
            assert new != raw
            changed.append(collection)
            return new
        return raw

    rewrite_archive(tmp_path / "r", manifest, edit)
    assert changed == ["types"]
    state = drill(conn_block, store_block, source)
    assert state.is_failed()
    with pytest.raises(DrillFailed, match=r"types: content sha256"):
        state.result()
