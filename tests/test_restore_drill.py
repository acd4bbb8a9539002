"""restore-drill end to end: a real backup (backup-mysql), a private MariaDB, local folders and
the GCS API server, a real Prefect API. Each case states the expected verdict and message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from blocks import BackupStore, MySQLConnection
from flows.backup import BackupMySQLParams, backup_mysql
from flows.forms import params_of
from flows.restore_drill import (
    CleanupDrillsParams,
    RestoreDrillParams,
    cleanup_drills,
    default_history_path,
    restore_drill,
)
from tasks.drill import read_history, scratch_database_name
from tasks.errors import DrillFailed, RestoreTargetRefused
from tasks.manifest import backup_prefix, new_backup_id
from tasks.physical import ScratchServer, create_scratch_server
from tasks.restore import read_drill_markers
from tasks.sample_data import create_sample_database
from tasks.storage import open_store
from tests.fixtures.gcs import gcs_destination
from tests.fixtures.mysql import run_sql
from tests.helpers import (
    REGIONS,
    Regions,
    artifacts_of,
    back_up_to_local_regions,
    local_store,
    markdown_of,
    run_texts,
    save_block,
)

pytestmark = pytest.mark.mysql


@pytest.fixture(autouse=True)
def vibeops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VIBEOPS_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def source_db(mysql_root: MySQLConnection):
    name = f"src_{uuid.uuid4().hex[:8]}"
    create_sample_database(mysql_root, name, rows=3000)
    yield name
    run_sql(mysql_root, f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture(scope="module")
def server_block(mysql_root: MySQLConnection) -> str:
    return save_block(mysql_root)


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory, source_db: str, server_block: str):
    """One real backup of the source in two local regions (copied per test)."""
    root = tmp_path_factory.mktemp("golden")
    manifest = back_up_to_local_regions(root, source_db, server_block)
    return root, manifest


@pytest.fixture
def regions(golden, tmp_path: Path) -> Regions:
    root, manifest = golden
    copy = tmp_path / "regions"
    return Regions.copy_of(root, manifest, copy)


def params(regions: Regions, source: str, server: str, **extra) -> RestoreDrillParams:
    return RestoreDrillParams(
        source=source, store_block=regions.block, drill_server_block=server, **extra
    )


def drill_databases(conn: MySQLConnection, source: str) -> list[str]:
    prefix = f"drill_{source.lower()}"
    return [name for name in read_drill_markers(conn) if name.startswith(prefix)]


def events_named(name: str, flow_run_id: uuid.UUID) -> list[dict]:
    """Events of one flow run (they arrive asynchronously: poll briefly)."""
    body = {
        "filter": {
            "event": {"name": [name]},
            "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 50,
    }
    with get_client(sync_client=True) as client:
        for _ in range(60):
            events = client.request("POST", "/events/filter", json=body).json()["events"]
            if events:
                return events
            time.sleep(0.25)
    return []


def failure(state) -> BaseException:  # type: ignore[no-untyped-def]
    with pytest.raises(Exception) as info:
        state.result()
    return info.value


# -- the cases of the issue --------------------------------------------------------------------


def test_good_backup_passes_with_exact_parity_rto_and_rpo(
    regions: Regions, source_db: str, server_block: str, mysql_root: MySQLConnection
) -> None:
    state = restore_drill(**params_of(params(regions, source_db, server_block)), return_state=True)
    assert state.is_completed(), state
    record = state.result()
    run_id = state.state_details.flow_run_id

    assert record.passed and record.reasons == []
    assert record.backup_id == regions.manifest.backup_id and record.region == "local-a"
    assert 0 < record.rto_seconds < 1800
    assert 0 < record.rpo_seconds < 3600
    assert {"find", "download", "load", "validate"} <= set(record.phases)
    assert drill_databases(mysql_root, source_db) == []

    report = markdown_of(run_id)
    assert "PASSED" in report and "Table parity" in report
    for table, facts in regions.manifest.tables.items():
        assert (
            f"| `{table}` | {facts.rows:,} | {facts.rows:,} | {facts.checksum} | {facts.checksum} "
            "| same ✅ |" in report
        )
    assert "expect_column_values_to_not_be_null" in report
    assert "FAILED" not in report
    assert f"`{scratch_database_name(source_db, record.backup_id)}` dropped" in report

    history = [a for a in artifacts_of(run_id) if a.type == "table"]
    assert [a.key for a in history] == [f"restore-drill-history-{source_db.replace('_', '-')}"]
    passed = events_named("vibeops.drill.passed", run_id)
    assert passed and passed[0]["payload"]["rto_seconds"] == record.rto_seconds
    assert passed[0]["payload"]["rpo_seconds"] == record.rpo_seconds
    [stored] = read_history(default_history_path(), source_db)
    assert stored.rto_seconds == record.rto_seconds and stored.passed


def test_one_flipped_byte_in_the_primary_falls_back_and_flags_the_copy(
    regions: Regions, source_db: str, server_block: str, mysql_root: MySQLConnection
) -> None:
    regions.flip_byte("local-a")
    state = restore_drill(**params_of(params(regions, source_db, server_block)), return_state=True)
    assert state.is_completed(), state
    record = state.result()
    run_id = state.state_details.flow_run_id

    assert record.passed and record.region == "local-b"
    assert record.corrupt_regions == ["local-a"]
    [event] = events_named("vibeops.drill.corrupt_copy", run_id)
    assert event["payload"]["region"] == "local-a"
    assert any(str(regions.object_path("local-a")) in o for o in event["payload"]["objects"])
    report = markdown_of(run_id)
    assert "| local-a | corrupt ⚠️ |" in report and "sha256" in report
    assert "Fell back to region `local-b`" in report
    assert drill_databases(mysql_root, source_db) == []


def test_flipped_in_both_regions_fails_naming_both_objects_and_leaves_nothing(
    regions: Regions, source_db: str, server_block: str, mysql_root: MySQLConnection
) -> None:
    regions.flip_byte("local-a")
    regions.flip_byte("local-b")
    state = restore_drill(**params_of(params(regions, source_db, server_block)), return_state=True)
    assert state.is_failed()
    error = failure(state)
    assert isinstance(error, DrillFailed)
    assert "no region's copy could be restored" in str(error)
    report = markdown_of(state.state_details.flow_run_id)
    for region in REGIONS:
        assert f"| {region} | corrupt ⚠️ |" in report
        assert str(regions.object_path(region)) in report
    assert drill_databases(mysql_root, source_db) == []
    [record] = read_history(default_history_path(), source_db)
    assert not record.passed and record.corrupt_regions == list(REGIONS)
    assert record.rto_seconds is None
    assert events_named("vibeops.drill.failed", state.state_details.flow_run_id)


def test_missing_manifest_skips_the_interrupted_backup_and_uses_the_previous_one(
    regions: Regions, source_db: str, server_block: str
) -> None:
    newer = new_backup_id(datetime.now(UTC) + timedelta(minutes=5))
    for region in REGIONS:
        folder = regions.root / region / backup_prefix("mysql", source_db, newer)
        folder.mkdir(parents=True)
        data = regions.object_path(region).read_bytes()
        (folder / "dump.sql.zst").write_bytes(data[: len(data) // 2])  # interrupted upload
    record = restore_drill(**params_of(params(regions, source_db, server_block)))
    assert record.passed and record.backup_id == regions.manifest.backup_id


@pytest.fixture
def gcs_and_local(tmp_path: Path, source_db: str, server_block: str, gcs_bucket_factory):
    """A real backup in a GCS bucket (primary region) and a local folder (secondary)."""
    bucket = gcs_bucket_factory()
    store = BackupStore(
        destinations=[gcs_destination("us-central1", bucket), local_store(tmp_path).destinations[0]]
    )
    store_block = save_block(store)
    backup_mysql(
        **params_of(
            BackupMySQLParams(
                source=source_db,
                database=source_db,
                connection_block=server_block,
                store_block=store_block,
            )
        )
    )
    return store, store_block, bucket


def test_restores_from_a_gcs_primary(
    gcs_and_local, source_db: str, server_block: str, mysql_root: MySQLConnection
) -> None:
    _, store_block, _ = gcs_and_local
    record = restore_drill(
        **params_of(
            RestoreDrillParams(
                source=source_db, store_block=store_block, drill_server_block=server_block
            )
        )
    )
    assert record.passed and record.region == "us-central1"
    assert record.corrupt_regions == [] and record.unreachable_regions == []
    assert drill_databases(mysql_root, source_db) == []


def test_primary_region_unreachable_falls_back_to_the_secondary(
    gcs_and_local, source_db: str, server_block: str, mysql_root: MySQLConnection
) -> None:
    store, store_block, bucket = gcs_and_local
    gcs = open_store(store.destinations[0])
    gcs._bucket.delete(force=True)  # type: ignore[attr-defined]  # the region is gone

    state = restore_drill(
        **params_of(
            RestoreDrillParams(
                source=source_db, store_block=store_block, drill_server_block=server_block
            )
        ),
        return_state=True,
    )
    assert state.is_completed(), state
    record = state.result()
    assert record.passed and record.region == "local-a"
    assert record.unreachable_regions == ["us-central1"]
    report = markdown_of(state.state_details.flow_run_id)
    assert "| us-central1 | unreachable (listing) ⚠️ |" in report and bucket in report
    assert drill_databases(mysql_root, source_db) == []


def _delete_one_row(sql: str) -> str:
    tampered, count = re.subn(r"\n\(17,'[^\n]*\n", "\n", sql, count=1)
    assert count == 1
    return tampered


def _drop_audit_log(sql: str) -> str:
    start = sql.index("--\n-- Table structure for table `audit_log`")
    end = sql.index("--\n-- Table structure for table", start + 10)
    return sql[:start] + sql[end:]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_delete_one_row, "table experiments: rows 2999 != 3000 in the manifest"),
        (_drop_audit_log, "table audit_log: table missing after restore"),
    ],
    ids=["row-deleted", "table-missing"],
)
def test_tampered_dump_fails_validation_naming_the_table(
    edit, message: str, regions: Regions, source_db: str, server_block: str, mysql_root
) -> None:
    regions.tamper_sql(edit)
    state = restore_drill(**params_of(params(regions, source_db, server_block)), return_state=True)
    assert state.is_failed()
    error = failure(state)
    assert isinstance(error, DrillFailed) and message in str(error)
    report = markdown_of(state.state_details.flow_run_id)
    assert "FAILED" in report and message.split(": ", 1)[1] in report
    assert drill_databases(mysql_root, source_db) == []


def test_backup_older_than_the_rpo_target_fails_on_rpo(
    regions: Regions, source_db: str, server_block: str
) -> None:
    regions.rewrite_manifest(consistent_at=datetime.now(UTC) - timedelta(hours=2))
    state = restore_drill(**params_of(params(regions, source_db, server_block)), return_state=True)
    assert state.is_failed()
    error = failure(state)
    assert "RPO 2h00m" in str(error) and "exceeds the target 1h00m00s" in str(error)
    assert error.record.rpo_seconds > 7200 and not error.record.passed
    [record] = read_history(default_history_path(), source_db)
    assert record.rto_seconds is not None, "the restore itself was good"
    assert len(record.reasons) == 1
    assert "| RTO (start to validated restore) |" in markdown_of(state.state_details.flow_run_id)


def test_target_equal_to_the_source_is_refused_before_any_work(
    source_db: str, server_block: str, mysql_root: MySQLConnection
) -> None:
    before = read_drill_markers(mysql_root)
    with pytest.raises(RestoreTargetRefused, match="is the source database"):
        restore_drill(
            **params_of(
                RestoreDrillParams(
                    source=source_db,
                    scratch_database=source_db,
                    store_block="no-such-store-block",  # loading it would be work: never reached
                    drill_server_block=server_block,
                )
            )
        )
    assert read_drill_markers(mysql_root) == before
    assert not default_history_path().exists()
    assert run_sql(mysql_root, f"SELECT COUNT(*) FROM {source_db}.experiments")[0][0] == 3000


def test_existing_database_not_created_by_a_drill_is_refused_and_untouched(
    regions: Regions, source_db: str, server_block: str, mysql_root: MySQLConnection
) -> None:
    name = f"drill_foreign_{uuid.uuid4().hex[:6]}"
    run_sql(mysql_root, f"CREATE DATABASE {name}")
    run_sql(mysql_root, "CREATE TABLE precious (id INT PRIMARY KEY)", name)
    try:
        state = restore_drill(
            **params_of(params(regions, source_db, server_block, scratch_database=name)),
            return_state=True,
        )
        assert state.is_failed()
        assert "not created by a drill" in str(failure(state))
        assert run_sql(mysql_root, f"SHOW TABLES FROM {name}") == [("precious",)]
    finally:
        run_sql(mysql_root, f"DROP DATABASE {name}")


def test_keep_window_then_cleanup_drills_drops_it(
    regions: Regions, source_db: str, server_block: str, mysql_root: MySQLConnection
) -> None:
    record = restore_drill(**params_of(params(regions, source_db, server_block, keep_hours=2)))
    name = scratch_database_name(source_db, record.backup_id)
    marker = read_drill_markers(mysql_root, [name])[name]
    assert marker is not None and marker.status == "passed"
    assert marker.keep_until is not None and marker.keep_until > datetime.now(UTC) + timedelta(
        hours=1
    )
    assert run_sql(mysql_root, f"SELECT COUNT(*) FROM {name}.experiments")[0][0] == 3000

    plan = cleanup_drills(**params_of(CleanupDrillsParams(drill_server_block=server_block)))
    assert any(i.database == name and not i.drop for i in plan)
    cleanup_drills(
        **params_of(
            CleanupDrillsParams(drill_server_block=server_block, force_drop=[name], dry_run=True)
        )
    )
    assert name in read_drill_markers(mysql_root, [name]), "dry run drops nothing"
    cleanup_drills(
        **params_of(
            CleanupDrillsParams(drill_server_block=server_block, force_drop=[name], dry_run=False)
        )
    )
    assert read_drill_markers(mysql_root, [name]) == {}


def test_least_privilege_drill_user_and_password_never_in_argv_or_outputs(
    regions: Regions, source_db: str, mariadb_server, mysql_root: MySQLConnection
) -> None:
    secret = f"Dr1ll-{uuid.uuid4().hex}"
    user = f"dr{uuid.uuid4().hex[:6]}"
    run_sql(mysql_root, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'")
    # What a drill user needs: its own scratch databases; SUPER to create the dump's triggers
    # while binary logging is on; SET USER for their DEFINERs; BINLOG ADMIN for sql_log_bin=0.
    # It gets no privilege on the source database.
    run_sql(mysql_root, f"GRANT ALL PRIVILEGES ON `drill\\_%`.* TO '{user}'@'%'")
    run_sql(mysql_root, f"GRANT SUPER, SET USER, BINLOG ADMIN ON *.* TO '{user}'@'%'")
    conn = MySQLConnection(host="127.0.0.1", port=mariadb_server.port, user=user, password=secret)
    seen: list[bytes] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        cmdline = (entry / "cmdline").read_bytes()
                    except OSError:
                        continue
                    if b"--defaults-extra-file=" in cmdline or secret.encode() in cmdline:
                        seen.append(cmdline)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        state = restore_drill(
            **params_of(params(regions, source_db, save_block(conn), load_connections=2)),
            return_state=True,
        )
    finally:
        stop.set()
        watcher.join()
    assert state.is_completed(), state
    assert any(b"mariadb" in argv or b"mysql" in argv for argv in seen), "no load client seen"
    assert all(secret.encode() not in argv for argv in seen)
    assert secret not in run_texts(state.state_details.flow_run_id)


def _crashed_drill_server(
    name: str, age: timedelta
) -> tuple[ScratchServer, subprocess.Popen[bytes]]:
    """A throwaway-server folder as a crashed drill leaves it, its process still running."""
    scratch = create_scratch_server(name, protected_ports=[])
    scratch._write_files()
    # A process started exactly as the drill starts mariadbd (same --defaults-file argument).
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(600)",
            f"--defaults-file={scratch.config_path}",
        ],
        start_new_session=True,
    )
    (scratch.workdir / "mysqld.pid").write_text(f"{process.pid}\n")
    then = time.time() - age.total_seconds()
    os.utime(scratch.workdir, (then, then))
    return scratch, process


def test_cleanup_drills_removes_servers_that_crashed_physical_drills_left(
    server_block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIBEOPS_HOME", str(tmp_path / "home"))
    crashed, server = _crashed_drill_server("drill_crashed", timedelta(hours=13))
    running, live = _crashed_drill_server("drill_running", timedelta(minutes=5))
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    reused, gone = _crashed_drill_server("drill_reused_pid", timedelta(days=2))
    gone.kill()
    gone.wait()
    (reused.workdir / "mysqld.pid").write_text(f"{bystander.pid}\n")  # now someone else's pid
    try:
        plan = cleanup_drills(**params_of(CleanupDrillsParams(drill_server_block=server_block)))
        folders = {i.database: i for i in plan if i.what == "server folder"}
        assert set(folders) == {str(crashed.workdir), str(reused.workdir)}
        assert "still running" in folders[str(crashed.workdir)].reason
        assert "no server running" in folders[str(reused.workdir)].reason
        assert crashed.workdir.exists() and server.poll() is None, "a dry run touches nothing"

        cleanup_drills(
            **params_of(CleanupDrillsParams(drill_server_block=server_block, dry_run=False))
        )
        assert server.wait(timeout=30) is not None
        assert not crashed.workdir.exists() and not reused.workdir.exists()
        assert crashed.socket_dir is not None and not crashed.socket_dir.exists()
        assert running.workdir.exists() and live.poll() is None, "a young folder is kept"
        assert bystander.poll() is None, "a reused pid is never signalled"
    finally:
        for process in (server, live, bystander):
            process.kill()
            process.wait()
        running.remove()
