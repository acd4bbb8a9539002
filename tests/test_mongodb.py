"""MongoDB backup, restore drill and purge with the real pymongo client against the wire stand-in."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bson import Binary, Decimal128, ObjectId
from bson.codec_options import CodecOptions
from pydantic import SecretStr

from blocks import BackupStore, LocalFolderDestination, RetentionPolicy
from blocks.mongo import MongoConnection
from flows.backup_mongodb import BackupMongoDBParams, backup_mongodb
from flows.forms import params_of
from flows.restore_drill_mongodb import RestoreDrillMongoDBParams, restore_drill_mongodb
from flows.retention import PurgeRetentionParams, purge_retention
from tasks.errors import (
    DatabaseAuthError,
    DatabaseNotFound,
    DatabaseUnreachable,
    DrillFailed,
    RestoreTargetRefused,
    RetentionPolicyInvalid,
)
from tasks.local_stack import free_port
from tasks.manifest import BackupManifest, parse_manifest
from tasks.mongo import (
    MARKER_COLLECTION,
    count_expired_documents,
    read_source_facts,
    restore_archive,
)
from tasks.retention import MongoCollectionRule, plan_collection_rule
from tasks.storage import open_store
from tests.fixtures.gcs import gcs_destination
from tests.helpers import local_store, run_texts, save_block

REGIONS = ("local-a", "local-b")
UTC_OPTS = CodecOptions(tz_aware=True, tzinfo=UTC)


@pytest.fixture(autouse=True)
def vibeops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VIBEOPS_HOME", str(home))
    return home


def sample_documents(count: int = 1200) -> dict[str, list[dict]]:
    """Documents of every awkward kind: nested, arrays, binary, datetimes, emoji, Decimal128."""
    base = datetime(2025, 1, 1, tzinfo=UTC)
    events = [
        {
            "_id": ObjectId(),
            "n": i,
            "created_at": base + timedelta(hours=i),
            "name": f"événement {i} 🚀 日本",
            "tags": ["a", i, {"deep": [i, None, True]}],
            "nested": {"price": Decimal128(f"{i}.0105"), "blob": Binary(bytes([i % 256]) * 9)},
            "uuidish": Binary(uuid.uuid4().bytes, 4),
            "ratio": i / 7,
            "big": 2**40 + i,
        }
        for i in range(count)
    ]
    users = [
        {"_id": f"user-{i:04d}", "email": f"u{i}@example.org", "age": i % 90} for i in range(57)
    ]
    return {"events": events, "users": users, "empty": []}


@pytest.fixture
def seeded(mongo_conn: MongoConnection, mongo_database: str) -> dict[str, list[dict]]:
    docs = sample_documents()
    with mongo_conn.client() as client:
        db = client[mongo_database]
        for name, items in docs.items():
            db.create_collection(name)
            if items:
                db[name].insert_many(items)
        db["events"].create_index("created_at")
    return docs


def backup_params(
    conn_block: str, store_block: str, database: str, source: str
) -> BackupMongoDBParams:
    return BackupMongoDBParams(
        source=source, database=database, connection_block=conn_block, store_block=store_block
    )


def drill_params(
    conn_block: str, store_block: str, source: str, **extra
) -> RestoreDrillMongoDBParams:
    return RestoreDrillMongoDBParams(
        source=source, drill_server_block=conn_block, store_block=store_block, **extra
    )


def read_all(conn: MongoConnection, database: str) -> dict[str, list[dict]]:
    with conn.client() as client:
        db = client.get_database(database, codec_options=UTC_OPTS)
        return {
            name: list(db[name].find({}, sort=[("_id", 1)]))
            for name in sorted(db.list_collection_names())
            if name != MARKER_COLLECTION
        }


def texts_with(flow_run_id: uuid.UUID, needle: str) -> str:
    """run_texts once `needle` shows up (events arrive asynchronously)."""
    for _ in range(60):
        texts = run_texts(flow_run_id)
        if needle in texts:
            return texts
        time.sleep(0.25)
    raise AssertionError(f"{needle!r} never appeared in the run's logs, artifacts or events")


def database_names(conn: MongoConnection) -> list[str]:
    with conn.client() as client:
        return client.list_database_names()


def data_objects(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "mongodb" in p.parts)


@pytest.fixture
def backed_up(
    tmp_path: Path, mongo_conn: MongoConnection, mongo_database: str, seeded
) -> Iterator[tuple[str, str, str, BackupManifest]]:
    """One committed backup in two local regions: (conn block, store block, source, manifest)."""
    conn_block = save_block(mongo_conn)
    store_block = save_block(local_store(tmp_path / "regions", REGIONS))
    source = f"m{uuid.uuid4().hex[:8]}"
    manifest = backup_mongodb(
        **params_of(backup_params(conn_block, store_block, mongo_database, source))
    )
    yield conn_block, store_block, source, manifest


def test_round_trip_two_local_regions_and_gcs_in_one_pass(
    tmp_path: Path,
    mongo_conn: MongoConnection,
    mongo_database: str,
    seeded,
    gcs_bucket_factory,
) -> None:
    store = BackupStore(
        destinations=[
            LocalFolderDestination(region="local-a", path=str(tmp_path / "a")),
            LocalFolderDestination(region="local-b", path=str(tmp_path / "b")),
            gcs_destination("gcs-c", gcs_bucket_factory()),
        ]
    )
    source = f"rt{uuid.uuid4().hex[:6]}"
    manifest = backup_mongodb(
        **params_of(
            backup_params(save_block(mongo_conn), save_block(store), mongo_database, source)
        )
    )

    assert manifest.kind == "mongodb" and manifest.engine == "mongo-archive"
    assert manifest.prefix.startswith(f"mongodb/{source}/{manifest.backup_id[:4]}/")
    assert manifest.objects[0].name == "dump.bson.zst"
    assert {n: t.rows for n, t in manifest.tables.items()} == {
        "empty": 0,
        "events": 1200,
        "users": 57,
    }
    assert all(t.sha256 and len(t.sha256) == 64 for t in manifest.tables.values())
    stores = [open_store(d) for d in store.destinations]
    for s in stores:  # the same bytes and the manifest in all three regions
        assert parse_manifest(s.read_bytes(manifest.manifest_key)) == manifest
        data = s.read_bytes(manifest.object_key("dump.bson.zst"))
        assert len(data) == manifest.objects[0].size

    scratch = f"drill_rt_{uuid.uuid4().hex[:8]}"
    try:
        stats = restore_archive(mongo_conn, scratch, manifest, stores[2], {"test": True})
        assert stats.documents == 1257
        assert read_all(mongo_conn, scratch) == read_all(mongo_conn, mongo_database)
        with mongo_conn.client() as client:
            names = [i["name"] for i in client[scratch]["events"].list_indexes()]
        assert "created_at_1" in names
    finally:
        with mongo_conn.client() as client:
            client.drop_database(scratch)


def test_drill_passes_measures_rto_rpo_and_drops_scratch(
    backed_up, mongo_conn: MongoConnection, vibeops_home: Path
) -> None:
    conn_block, store_block, source, manifest = backed_up
    state = restore_drill_mongodb(
        **params_of(drill_params(conn_block, store_block, source)), return_state=True
    )
    assert state.is_completed(), state
    record = state.result()
    assert record.passed and record.region == "local-a" and record.backup_id == manifest.backup_id
    assert record.rto_seconds is not None and record.rto_seconds < 60
    assert record.rpo_seconds is not None and record.rows == 1257
    assert not [n for n in database_names(mongo_conn) if n.startswith("drill_")]
    history = (vibeops_home / "drills" / "history.jsonl").read_text()
    assert f"mongodb/{source}" in history
    texts = texts_with(state.state_details.flow_run_id, "vibeops.drill.passed")
    assert "| events | 1200 | 1200 | yes |" in texts and '"kind":"mongodb"' in texts


def test_corrupt_copy_fails_verification_and_drill_falls_back(
    backed_up, mongo_conn: MongoConnection, tmp_path: Path
) -> None:
    conn_block, store_block, source, manifest = backed_up
    target = tmp_path / "regions" / "local-a" / manifest.object_key("dump.bson.zst")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))

    record = restore_drill_mongodb(**params_of(drill_params(conn_block, store_block, source)))
    assert record.passed and record.region == "local-b"
    assert record.corrupt_regions == ["local-a"]
    assert not [n for n in database_names(mongo_conn) if n.startswith("drill_")]


def test_missed_rto_target_fails_loudly_and_drops_scratch(
    backed_up, mongo_conn: MongoConnection
) -> None:
    conn_block, store_block, source, _ = backed_up
    with pytest.raises(DrillFailed, match=r"RTO .* exceeds the target"):
        restore_drill_mongodb(
            **params_of(
                drill_params(conn_block, store_block, source, rto_target=timedelta(microseconds=1))
            )
        )
    assert not [n for n in database_names(mongo_conn) if n.startswith("drill_")]


def test_drill_refuses_the_source_database_as_scratch(
    tmp_path: Path, mongo_conn: MongoConnection
) -> None:
    database = (
        f"drill_src_{uuid.uuid4().hex[:8]}"  # a drill-like name: only the source rule stops it
    )
    with mongo_conn.client() as client:
        client[database]["orders"].insert_many([{"_id": i} for i in range(10)])
    try:
        conn_block = save_block(mongo_conn)
        store_block = save_block(local_store(tmp_path / "regions", REGIONS))
        backup_mongodb(**params_of(backup_params(conn_block, store_block, database, "refuse")))
        with pytest.raises(
            RestoreTargetRefused, match=r"scratch_database .* is the source database"
        ):
            restore_drill_mongodb(
                **params_of(
                    drill_params(conn_block, store_block, "refuse", scratch_database=database)
                )
            )
        with mongo_conn.client() as client:
            assert client[database]["orders"].count_documents({}) == 10
            assert MARKER_COLLECTION not in client[database].list_collection_names()
    finally:
        with mongo_conn.client() as client:
            client.drop_database(database)


def test_wrong_password_is_a_typed_error_naming_the_field_and_writes_nothing(
    tmp_path: Path, mongo_conn: MongoConnection, mongo_database: str, seeded
) -> None:
    bad = mongo_conn.model_copy(update={"password": SecretStr("not-the-password")})
    store = local_store(tmp_path / "regions", REGIONS)
    state = backup_mongodb(
        **params_of(backup_params(save_block(bad), save_block(store), mongo_database, "badpw")),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(DatabaseAuthError, match="password") as info:
        state.result()
    assert "connection_block" in str(info.value) and "not-the-password" not in str(info.value)
    assert data_objects(tmp_path / "regions") == []
    texts = texts_with(state.state_details.flow_run_id, "vibeops.backup.failed")
    assert "not-the-password" not in texts and "DatabaseAuthError" in texts


def test_unreachable_host_and_missing_database(mongo_conn: MongoConnection) -> None:
    nowhere = MongoConnection(port=free_port(), server_selection_timeout_seconds=1)
    with pytest.raises(DatabaseUnreachable, match=r"connection_block: .* unreachable.*host, port"):
        read_source_facts(nowhere, "vibebench")
    with pytest.raises(DatabaseNotFound, match="database: 'no_such_db' does not exist"):
        read_source_facts(mongo_conn, "no_such_db")


def test_password_never_in_logs_artifacts_events_or_manifest(
    backed_up, mongo_conn: MongoConnection, tmp_path: Path
) -> None:
    conn_block, store_block, source, manifest = backed_up
    secret = mongo_conn.password.get_secret_value()
    state = restore_drill_mongodb(
        **params_of(drill_params(conn_block, store_block, source)), return_state=True
    )
    assert state.is_completed()
    assert secret not in run_texts(state.state_details.flow_run_id)
    assert secret not in manifest.to_json().decode()
    for path in (tmp_path / "regions").rglob("manifest.json"):
        assert secret not in path.read_text()
    # No child processes: the dump runs in-process through pymongo, so no argv can carry it.
    backup_state = backup_mongodb(
        **params_of(backup_params(conn_block, store_block, manifest.database, source)),
        return_state=True,
    )
    assert backup_state.is_completed()
    texts = texts_with(backup_state.state_details.flow_run_id, "vibeops.backup.succeeded")
    assert secret not in texts and json.dumps(secret)[1:-1] not in texts


AS_OF = datetime(2025, 3, 1, tzinfo=UTC)


def test_purge_plan_is_exact_dry_run_changes_nothing_and_run_deletes_exactly_those(
    mongo_conn: MongoConnection, mongo_database: str, seeded
) -> None:
    rule = MongoCollectionRule(
        name="old-events",
        database=mongo_database,
        collection="events",
        time_field="created_at",
        older_than_days=30,
    )
    cutoff = AS_OF - timedelta(days=30)
    events = seeded["events"]
    expired = sorted(d["_id"] for d in events if d["created_at"] < cutoff)
    assert 0 < len(expired) < len(events)

    counts = count_expired_documents(mongo_conn, mongo_database, "events", "created_at", cutoff)
    plan = plan_collection_rule(
        rule, AS_OF, counts.matching, counts.total, counts.avg_size, 0.9, False
    )
    assert (plan.rows, plan.total, plan.cutoff, plan.refused) == (len(expired), 1200, cutoff, None)

    policy = save_block(RetentionPolicy(rules=[rule], max_delete_fraction=0.9, chunk_rows=100))
    params = PurgeRetentionParams(
        policy_block=policy, mongo_connection_block=save_block(mongo_conn), as_of=AS_OF
    )
    [dry] = purge_retention(**params_of(params))
    assert dry.status == "dry-run"
    assert len(read_all(mongo_conn, mongo_database)["events"]) == 1200

    [done] = purge_retention(**params_of(params.model_copy(update={"dry_run": False})))
    assert (done.status, done.rows_deleted) == ("ok", len(expired))
    left = read_all(mongo_conn, mongo_database)
    assert sorted(d["_id"] for d in left["events"]) == sorted(
        d["_id"] for d in events if d["created_at"] >= cutoff
    )
    assert len(left["users"]) == 57

    [again] = purge_retention(**params_of(params.model_copy(update={"dry_run": False})))
    assert (again.status, again.rows_deleted) == ("nothing-to-do", 0)


def test_purge_refuses_a_missing_collection_and_a_too_large_share(
    mongo_conn: MongoConnection, mongo_database: str, seeded
) -> None:
    rule = MongoCollectionRule(
        name="old-events", database=mongo_database, collection="events", older_than_days=30
    )
    cutoff = AS_OF - timedelta(days=30)
    counts = count_expired_documents(mongo_conn, mongo_database, "events", "created_at", cutoff)
    plan = plan_collection_rule(rule, AS_OF, counts.matching, counts.total, 1, 0.5, False)
    assert plan.refused and "max_delete_fraction" in plan.refused
    with pytest.raises(RetentionPolicyInvalid, match="fix the rule's database/collection"):
        count_expired_documents(mongo_conn, mongo_database, "nope", "created_at", cutoff)


def test_standin_answers_real_mongodb_error_documents(mongo_conn: MongoConnection) -> None:
    from pymongo import MongoClient
    from pymongo.errors import DuplicateKeyError, OperationFailure

    def code_of(call) -> tuple[int | None, str | None]:
        with pytest.raises(OperationFailure) as info:
            call()
        return info.value.code, (info.value.details or {}).get("codeName")

    anonymous = MongoClient(mongo_conn.host, mongo_conn.port, serverSelectionTimeoutMS=3000)
    with anonymous, mongo_conn.client() as client:
        assert code_of(lambda: anonymous.vb.c.find_one()) == (13, "Unauthorized")
        assert code_of(lambda: client.vb.command("noSuchCommand")) == (59, "CommandNotFound")
        assert code_of(lambda: client.vb.command("listIndexes", "missing")) == (
            26,
            "NamespaceNotFound",
        )
        db = client[f"t_{uuid.uuid4().hex[:8]}"]
        try:
            db.c.insert_one({"_id": 1})
            with pytest.raises(DuplicateKeyError):
                db.c.insert_one({"_id": 1})
            db.c.insert_many([{"_id": i + 2, "v": i} for i in range(250)])
            cursor = db.c.find({"v": {"$gte": 10, "$lt": 240}}, batch_size=7).sort("v", -1)
            assert [d["v"] for d in cursor] == list(range(239, 9, -1))  # many getMores
            assert db.c.count_documents({"v": {"$in": [1, 2, 999]}}) == 2
            assert db.c.delete_one({"v": {"$gt": 100}}).deleted_count == 1
            db.command("createUser", "reader", pwd="r-pw", roles=[])
            assert db.command("usersInfo", "reader")["users"][0]["user"] == "reader"
        finally:
            client.drop_database(db.name)
