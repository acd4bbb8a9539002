"""Object steps on real stores: gzip compression with verification, resume, failure handling."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime, timedelta

import pytest

from tasks.object_purge import compress_object, run_object_steps
from tasks.retention import ObjectPrefixRule, ObjectStep, plan_object_rule
from tasks.storage import LocalFolderStore, open_store
from tests.fixtures.gcs import gcs_destination

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TEXT = b"2025-01-01T00:00:00Z GET /api/runs 200 12ms\n" * 5000


@pytest.fixture
def local(tmp_path) -> LocalFolderStore:
    return LocalFolderStore("local-a", tmp_path / "a")


def test_compress_writes_verifies_and_removes_the_original(local):
    local.write_bytes("logs/app.log", TEXT)
    original, compressed = compress_object(local, "logs/app.log")
    assert original == len(TEXT) and 0 < compressed < len(TEXT) // 10
    assert {o.key for o in local.list_objects("logs/")} == {"logs/app.log.gz"}
    assert gzip.decompress(local.read_bytes("logs/app.log.gz")) == TEXT


def test_interrupted_compress_is_finished_or_redone(local):
    # the copy was written but the original not yet deleted: reused after verification
    local.write_bytes("logs/a.log", TEXT)
    local.write_bytes("logs/a.log.gz", gzip.compress(TEXT))
    before = local.read_bytes("logs/a.log.gz")
    compress_object(local, "logs/a.log")
    assert local.read_bytes("logs/a.log.gz") == before
    assert not local.exists("logs/a.log")
    # a stale or foreign .gz that does not match is rewritten, never trusted
    local.write_bytes("logs/b.log", TEXT)
    local.write_bytes("logs/b.log.gz", b"not gzip at all")
    compress_object(local, "logs/b.log")
    assert gzip.decompress(local.read_bytes("logs/b.log.gz")) == TEXT


@pytest.mark.gcs
def test_compress_on_the_gcs_server(gcs_bucket_factory):
    store = open_store(gcs_destination("gcs-b", gcs_bucket_factory("logs")))
    store.write_bytes("logs/2025/01/01/api.log", TEXT)
    compress_object(store, "logs/2025/01/01/api.log")
    assert [o.key for o in store.list_objects("logs/")] == ["logs/2025/01/01/api.log.gz"]
    assert gzip.decompress(store.read_bytes("logs/2025/01/01/api.log.gz")) == TEXT


def test_age_from_update_time_on_a_real_folder(local):
    for name, days in (("new.log", 3), ("week.log", 8), ("old.log", 40), ("old.log.gz", 40)):
        local.write_bytes(f"logs/{name}", b"x")
        stamp = (NOW - timedelta(days=days)).timestamp()
        os.utime(local.root / "logs" / name, (stamp, stamp))
    rule = ObjectPrefixRule(name="logs", prefix="logs/", action="compress", older_than_days=7)
    plan = plan_object_rule(rule, NOW, {"local-a": local.list_objects("logs/")}, 0.5, False)
    assert [s.key for s in plan.steps] == ["logs/old.log", "logs/week.log"]


def test_a_failed_data_object_keeps_its_backup_manifest(local):
    prefix = "mysql/vb/2024/11/01/20241101T000000Z-abcdef/"
    local.write_bytes(f"{prefix}manifest.json", b"{}")
    steps = [
        # the data object's folder is gone: archiving it fails
        ObjectStep(
            region="local-a",
            key=f"{prefix}missing/dump.sql.zst",
            size=1,
            action="archive",
            backup_id="20241101T000000Z-abcdef",
        ),
        ObjectStep(
            region="local-a",
            key=f"{prefix}manifest.json",
            size=2,
            action="archive",
            backup_id="20241101T000000Z-abcdef",
        ),
        ObjectStep(region="local-a", key="artifacts/x.json", size=3, action="delete"),
    ]
    local.write_bytes("artifacts/x.json", b"abc")
    done = []
    totals = run_object_steps.fn({"local-a": local}, steps, {"local-a": "ARCHIVE"}, done.append)
    assert len(totals.errors) == 1 and "missing/dump.sql.zst" in totals.errors[0]
    assert totals.archived == 0 and totals.deleted == 1
    classes = {o.key: o.storage_class for o in local.list_objects("mysql/")}
    assert classes == {f"{prefix}manifest.json": "STANDARD"}
    assert not local.exists("artifacts/x.json")
    assert done[-1] == 3
