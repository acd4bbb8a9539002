"""purge-retention end to end: real MariaDB, the GCS API server and a local folder, fixed now.

Backups are made directly (objects + manifest.json) with chosen ids and dates, so these tests
do not depend on the backup flow.
"""

from __future__ import annotations

import gzip
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.states import Scheduled

from blocks import BackupStore, LocalFolderDestination, MySQLConnection, RetentionPolicy
from flows.forms import params_of
from flows.retention import PurgeRetentionParams, purge_retention
from tasks.errors import RetentionIncomplete, RetentionPolicyInvalid
from tasks.manifest import BackupManifest, StoredObject, backup_prefix, new_backup_id
from tasks.retention import AUDIT_MIN_DAYS, BackupRule, MySQLTableRule, ObjectPrefixRule
from tasks.storage import ObjectStore, open_store
from tests.fixtures.gcs import gcs_destination
from tests.fixtures.mysql import run_sql

pytestmark = [pytest.mark.mysql, pytest.mark.gcs, pytest.mark.slow]

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ROWS, OLD_ROWS = 1440, 1080  # one row every 2 hours over 120 days; 90 of them older than 30

LOGS = {  # key -> compressed by the 7-day rule?
    "logs/2025/02/27/api.log": False,
    "logs/2025/02/20/api.log": True,
    "logs/2025/01/01/worker.log": True,
    "logs/2025/01/01/rotated.log.gz": False,
    "logs/README": False,
}
ARTIFACTS = {  # key -> deleted by the 60-day rule?
    "artifacts/2025/02/01/run-1/result.json": False,
    "artifacts/2025/01/10/run-4/result.json": False,
    "artifacts/2024/12/15/run-2/result.json": True,
    "artifacts/2024/11/01/run-3/a.bin": True,
    "artifacts/2024/11/01/run-3/b.bin": True,
}
# source -> backup ages in days; the decision for each under keep 7 / archive 30 / delete 90
VIBEBENCH = {
    1: "K",
    2: "K",
    5: "K",
    10: "K",
    20: "K",
    35: "K",
    50: "K",
    80: "A",
    95: "D",
    100: "D",
    120: "D",
}
ANALYTICS = {
    100: "K",
    110: "K",
    120: "K",
    130: "K",
    140: "K",
    150: "K",
    160: "K",
    170: "D",
    180: "D",
}


def policy_rules(**overrides) -> list:
    raw = {"name": "raw-experiments", "table": "experiments", "older_than_days": 30}
    raw.update(overrides)
    return [
        MySQLTableRule(**raw),
        MySQLTableRule(
            name="audit-log", table="audit_log", older_than_days=AUDIT_MIN_DAYS, data_class="audit"
        ),
        MySQLTableRule(
            name="aggregated-metrics",
            table="metrics_aggregated",
            action="keep",
            data_class="aggregated",
        ),
        ObjectPrefixRule(
            name="artifacts",
            prefix="artifacts/",
            action="delete",
            older_than_days=60,
            age_from="key_date",
            data_class="artifact",
        ),
        ObjectPrefixRule(
            name="logs",
            prefix="logs/",
            action="compress",
            older_than_days=7,
            age_from="key_date",
            data_class="log",
        ),
        BackupRule(name="mysql-backups"),
    ]


@dataclass
class World:
    """A database, a two-region store and the block names pointing at them."""

    conn: MySQLConnection
    database: str
    stores: dict[str, ObjectStore]
    connection_block: str
    store_block: str
    backups: dict[tuple[str, int], str]  # (source, age) -> backup id

    def params(self, policy_block: str, **kw) -> PurgeRetentionParams:
        return PurgeRetentionParams(
            policy_block=policy_block,
            connection_block=self.connection_block,
            store_block=self.store_block,
            database=self.database,
            as_of=NOW,
            **kw,
        )

    def policy(self, rules: list | None = None, **kw) -> str:
        name = f"retention-{uuid.uuid4().hex[:8]}"
        RetentionPolicy(rules=rules or policy_rules(), chunk_rows=200, pause_ms=0, **kw).save(name)
        return name

    def rows(self, table: str = "experiments") -> int:
        return int(run_sql(self.conn, f"SELECT COUNT(*) FROM {table}", self.database)[0][0])

    def snapshot(self) -> dict[str, list[tuple[str, int, str | None]]]:
        return {
            region: [(o.key, o.size, o.storage_class) for o in store.list_objects("")]
            for region, store in self.stores.items()
        }

    def keys(self, region: str, prefix: str = "") -> set[str]:
        return {o.key for o in self.stores[region].list_objects(prefix)}

    def backup_keys(self, source: str, age: int) -> tuple[str, str]:
        prefix = backup_prefix("mysql", source, self.backups[(source, age)])
        return f"{prefix}dump.sql.zst", f"{prefix}manifest.json"


def _put_backup(stores: dict[str, ObjectStore], source: str, at: datetime, commit: bool) -> str:
    backup_id = new_backup_id(at)
    prefix = backup_prefix("mysql", source, backup_id)
    data = f"-- dump of {source} at {at:%Y-%m-%d}\n".encode() * 20
    manifest = BackupManifest(
        backup_id=backup_id,
        source=source,
        database=source,
        started_at=at,
        consistent_at=at,
        finished_at=at,
        prefix=prefix,
        objects=[
            StoredObject(
                name="dump.sql.zst", size=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
        ],
    )
    for store in stores.values():
        store.write_bytes(f"{prefix}dump.sql.zst", data)
        if commit:
            store.write_bytes(manifest.manifest_key, manifest.to_json())
    return backup_id


@pytest.fixture
def world(mysql_root, fresh_database, gcs_bucket_factory, tmp_path: Path) -> Iterator[World]:
    conn = mysql_root.model_copy(update={"database": fresh_database})
    start = f"{(NOW - timedelta(days=120)).replace(tzinfo=None):%Y-%m-%d %H:%M:%S}"
    for table in ("experiments", "audit_log", "metrics_aggregated"):
        run_sql(
            conn,
            f"CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
            "created_at DATETIME NOT NULL, payload VARCHAR(300) NOT NULL)",
            fresh_database,
        )
        run_sql(
            conn,
            f"INSERT INTO {table} (created_at, payload) SELECT TIMESTAMP'{start}' + "
            "INTERVAL (seq - 1) * 2 HOUR + INTERVAL 1 MINUTE, RPAD(MD5(seq), 300, 'p') "
            f"FROM seq_1_to_{ROWS}",
            fresh_database,
        )
    destinations = [
        LocalFolderDestination(region="local-a", path=str(tmp_path / "region-a")),
        gcs_destination("gcs-b", gcs_bucket_factory("retention")),
    ]
    stores = {d.region: open_store(d) for d in destinations}
    for store in stores.values():
        for key in [*LOGS, *ARTIFACTS]:
            store.write_bytes(key, f"{key}\n".encode() * 200)
    backups = {}
    for source, ages in (("vibebench", VIBEBENCH), ("analytics", ANALYTICS)):
        for age in ages:
            at = NOW - timedelta(days=age, hours=1)
            backups[(source, age)] = _put_backup(stores, source, at, commit=True)
    # a crashed upload long ago, and one being written right now: neither has a manifest
    backups[("vibebench", 200)] = _put_backup(stores, "vibebench", NOW - timedelta(days=200), False)
    backups[("vibebench", 0)] = _put_backup(stores, "vibebench", NOW - timedelta(minutes=5), False)
    suffix = uuid.uuid4().hex[:8]
    conn.save(f"retention-db-{suffix}")
    BackupStore(destinations=destinations).save(f"retention-store-{suffix}")
    yield World(
        conn, fresh_database, stores, f"retention-db-{suffix}", f"retention-store-{suffix}", backups
    )


def _expected_backup_keys(world: World, region: str) -> set[str]:
    keys: set[str] = set()
    for source, ages in (("vibebench", VIBEBENCH), ("analytics", ANALYTICS)):
        for age, decision in ages.items():
            if decision != "D":
                keys |= set(world.backup_keys(source, age))
    keys.add(world.backup_keys("vibebench", 0)[0])  # the in-progress upload is left alone
    return keys


def test_plan_is_exact_dry_run_changes_nothing_real_run_deletes_exactly_that(world):
    policy = world.policy(max_delete_fraction=0.9)
    before = world.snapshot()

    outcomes = purge_retention(**params_of(world.params(policy)))
    assert world.snapshot() == before and world.rows() == ROWS
    assert {o.rule: o.status for o in outcomes} == {
        "raw-experiments": "dry-run",
        "audit-log": "dry-run",
        "aggregated-metrics": "kept",
        "artifacts": "dry-run",
        "logs": "dry-run",
        "mysql-backups": "dry-run",
    }
    plan = _latest_markdown("purge-retention-plan")
    assert f"| raw-experiments | delete | `{world.database}.experiments.created_at` | " in plan
    assert f"| 2025-01-30 12:00Z | {OLD_ROWS} | 0 |" in plan
    assert "| audit-log | delete |" in plan and "| 2018-03-01 12:00Z | 0 | 0 |" in plan
    assert "| artifacts | delete | `artifacts/` | 2024-12-31 12:00Z | 0 | 6 |" in plan
    assert "| logs | compress | `logs/` | 2025-02-22 12:00Z | 0 | 4 |" in plan
    # per region: archive 80d (2 objects), delete 95/100/120d + 170/180d analytics (10), and
    # the crashed 200d upload (1)
    assert "| mysql-backups | archive+delete |" in plan and "| 0 | 26 |" in plan
    assert "Backups `mysql-backups`: ARCHIVE: 2, DELETE: 12, KEEP: 30" in plan

    outcomes = {
        o.rule: o for o in purge_retention(**params_of(world.params(policy, dry_run=False)))
    }
    assert outcomes["raw-experiments"].rows_deleted == OLD_ROWS
    assert world.rows() == ROWS - OLD_ROWS
    assert world.rows("audit_log") == ROWS and world.rows("metrics_aggregated") == ROWS
    assert outcomes["artifacts"].objects_deleted == 6
    assert outcomes["logs"].objects_compressed == 4 and outcomes["logs"].bytes_saved > 0
    assert outcomes["mysql-backups"].objects_deleted == 22
    assert outcomes["mysql-backups"].objects_archived == 4
    for region, store in world.stores.items():
        assert world.keys(region, "artifacts/") == {k for k, gone in ARTIFACTS.items() if not gone}
        assert world.keys(region, "logs/") == {
            f"{k}.gz" if compress else k for k, compress in LOGS.items()
        }
        compressed = store.read_bytes("logs/2025/01/01/worker.log.gz")
        assert gzip.decompress(compressed) == b"logs/2025/01/01/worker.log\n" * 200
        backup_keys = world.keys(region, "mysql/")
        assert backup_keys == _expected_backup_keys(world, region)
        classes = {o.key: o.storage_class for o in store.list_objects("mysql/")}
        archived = set(world.backup_keys("vibebench", 80))
        assert {k for k, c in classes.items() if c == "ARCHIVE"} == archived
    assert "| mysql-backups | done ✅ | - | 0 | 22 | 4 | 0 |" in _latest_markdown("purge-retention-report")

    # idempotent: a second real run plans nothing and changes nothing
    after = world.snapshot()
    again = purge_retention(**params_of(world.params(policy, dry_run=False)))
    assert {o.status for o in again} == {"nothing-to-do", "kept"}
    assert world.snapshot() == after and world.rows() == ROWS - OLD_ROWS


def test_newest_backups_survive_when_all_are_old_and_drills_protect_theirs(world):
    # 200 days later every backup is old; per source the newest 7 committed survive, and one
    # that a scheduled drill names is never deleted.
    later = NOW + timedelta(days=200)
    drill_target = world.backups[("analytics", 180)]

    @flow(name="restore-drill")
    def restore_drill(backup: str = "latest") -> None:
        return None

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(
            restore_drill, parameters={"backup": drill_target}, state=Scheduled()
        )
    try:
        policy = world.policy([BackupRule(name="mysql-backups")])
        params = world.params(policy, dry_run=False).model_copy(update={"as_of": later})
        purge_retention(**params_of(params))
    finally:
        with get_client(sync_client=True) as client:
            client.delete_flow_run(run.id)
    for region in world.stores:
        keys = world.keys(region, "mysql/")
        expected = set()
        for source, ages in (("vibebench", VIBEBENCH), ("analytics", ANALYTICS)):
            for age in sorted(ages)[:7]:
                expected |= set(world.backup_keys(source, age))
        expected |= set(world.backup_keys("analytics", 180))
        assert keys == expected


def test_half_deleted_backups_are_finished_on_the_next_run(world):
    policy = world.policy([BackupRule(name="mysql-backups")])
    local, gcs = world.stores["local-a"], world.stores["gcs-b"]
    dump95, manifest95 = world.backup_keys("vibebench", 95)
    dump100, manifest100 = world.backup_keys("vibebench", 100)
    dump80, manifest80 = world.backup_keys("vibebench", 80)
    local.delete(dump95)  # an interrupted purge: data gone, manifest left
    gcs.delete(manifest100)  # manifest gone, data left
    gcs.set_storage_class(dump80, "ARCHIVE")  # an interrupted archive
    purge_retention(**params_of(world.params(policy, dry_run=False)))
    for region in world.stores:
        assert world.keys(region, "mysql/") == _expected_backup_keys(world, region)
    gcs_classes = {o.key: o.storage_class for o in gcs.list_objects("mysql/")}
    assert gcs_classes[dump80] == gcs_classes[manifest80] == "ARCHIVE"
    assert manifest95 not in world.keys("local-a") and dump100 not in world.keys("gcs-b")
    again = purge_retention(**params_of(world.params(policy)))
    assert [o.status for o in again] == ["dry-run"]
    assert "| mysql-backups | archive+delete |" in _latest_markdown("purge-retention-plan")
    assert "| 0 | 0 | 0 B |" in _latest_markdown("purge-retention-plan")


def test_destructive_guard_refuses_one_rule_and_the_others_still_run(world):
    policy = world.policy()  # max_delete_fraction 0.5: raw (75%) and artifacts (60%) refused
    state = purge_retention(**params_of(world.params(policy, dry_run=False)), return_state=True)
    assert state.is_failed()
    with pytest.raises(RetentionIncomplete, match=r"raw-experiments \(refused\).*75%"):
        state.result()
    assert world.rows() == ROWS
    assert world.keys("gcs-b", "artifacts/") == set(ARTIFACTS)
    assert "logs/2025/01/01/worker.log.gz" in world.keys("gcs-b", "logs/")  # others did run
    outcomes = {
        o.rule: o
        for o in purge_retention(**params_of(world.params(policy, dry_run=False, force=True)))
    }
    assert outcomes["raw-experiments"].rows_deleted == OLD_ROWS
    assert outcomes["artifacts"].objects_deleted == 6


@pytest.mark.parametrize(
    ("rules", "as_of_shift", "message"),
    [
        (
            policy_rules(name="audit-short", table="audit_log", data_class="audit"),
            0,
            "rule 'audit-short': audit data must be kept 7 years",
        ),
        (
            policy_rules(older_than_days=0),
            0,
            "older_than_days must be a positive number of days, got 0",
        ),
        (
            policy_rules(older_than_days=-3),
            0,
            "older_than_days must be a positive number of days, got -3",
        ),
        (policy_rules(table="experimentz"), 0, "experimentz does not exist"),
        (policy_rules(time_column="inserted_at"), 0, "column 'inserted_at' does not exist"),
        (policy_rules(), 10_000, "is in the future"),
    ],
)
def test_bad_policies_are_refused_and_nothing_is_deleted(world, rules, as_of_shift, message):
    policy = world.policy(rules, max_delete_fraction=1.0)
    before = world.snapshot()
    params = world.params(policy, dry_run=False, force=True)
    params.as_of = datetime.now(UTC) + timedelta(days=as_of_shift) if as_of_shift else NOW
    with pytest.raises(RetentionPolicyInvalid) as info:
        purge_retention(**params_of(params))
    assert message in str(info.value) and "nothing was changed" in str(info.value)
    assert world.snapshot() == before and world.rows() == ROWS
    assert "REFUSED" in _latest_markdown("purge-retention-report")


def _latest_markdown(key: str) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, f"no artifact {key}"
    return str(found[0].data)
