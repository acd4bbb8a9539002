"""Backup engines end to end (mysqldump, mydumper, physical): a private MariaDB, local folders,
a real Prefect API. Every engine goes through backup-mysql and restore-drill; each case states
what it proves. Pure engine rules (tool choice, log parsing, RTO per engine) at the end."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pymysql
import pytest

from blocks import MySQLConnection
from flows.backup import BackupMySQLParams, backup_mysql
from flows.forms import params_of
from flows.restore_drill import RestoreDrillParams, default_history_path, restore_drill
from tasks.backup_stream import StreamResult, verify_copies
from tasks.drill import DrillMarker, DrillRecord, read_history
from tasks.engines import (
    EngineRto,
    physical_tools,
    resolve_engine,
    rto_by_engine,
    server_flavor,
)
from tasks.errors import (
    BackupVerificationError,
    ConfigurationError,
    DrillFailed,
    ExternalCommandError,
)
from tasks.local_stack import port_open
from tasks.manifest import BackupManifest, parse_manifest
from tasks.mysql import table_checksums
from tasks.physical import BackupLog, create_scratch_server, restore_physical
from tasks.restore import (
    create_scratch_database,
    drop_scratch_database,
    restore_logical_dump,
    restorer_for,
)
from tasks.sample_data import create_sample_database
from tasks.storage import LocalFolderStore
from tests.fixtures.mysql import run_sql
from tests.helpers import artifacts_of, child_argvs, local_store, run_texts, save_block

pytestmark = pytest.mark.mysql

ENGINES = ["mysqldump", "mydumper", "physical"]
REGIONS = ("local-a", "local-b")
TOOL_PROCESS = {"mysqldump": "mariadb-dump", "mydumper": "mydumper", "physical": "mariadb-backup"}
BLOBS = [
    "CREATE TABLE blobs (id INT PRIMARY KEY, raw LONGBLOB NULL, note TEXT NULL) ENGINE=InnoDB",
    "INSERT INTO blobs VALUES (1, UNHEX('00FF0A0D5C27225A1A'), 'emoji 🧪🚀 and ünïcødé'),"
    " (2, NULL, NULL), (3, REPEAT(UNHEX('00'), 70000), 'nul bytes'),"
    " (4, UNHEX(''), 'quote '' and backslash \\\\ and newline \\n')",
]


@pytest.fixture(autouse=True)
def vibeops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VIBEOPS_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def source_db(mysql_root: MySQLConnection):
    name = f"eng_{uuid.uuid4().hex[:8]}"
    create_sample_database(mysql_root, name, rows=3000)
    for statement in BLOBS:
        run_sql(mysql_root, statement, name)
    yield name
    run_sql(mysql_root, f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture(scope="module")
def server_block(mysql_root: MySQLConnection) -> str:
    return save_block(mysql_root)


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory, source_db: str, mysql_root: MySQLConnection):
    """One backup per engine in two local regions. mydumper comes from the block's default."""
    made: dict[str, tuple[Path, BackupManifest]] = {}
    for engine in ENGINES:
        root = tmp_path_factory.mktemp(f"golden-{engine}")
        if engine == "mydumper":
            block = mysql_root.model_copy(update={"backup_engine": "mydumper"})
            params = BackupMySQLParams(engine="default", chunk_rows=1000)  # several chunks
        else:
            block = mysql_root
            params = BackupMySQLParams(engine=engine)  # type: ignore[arg-type]
        made[engine] = (
            root,
            backup_mysql(
                **params_of(
                    params.model_copy(
                        update={
                            "source": source_db,
                            "database": source_db,
                            "connection_block": save_block(block),
                            "store_block": save_block(local_store(root)),
                        }
                    )
                )
            ),
        )
    return made


def backup_params(
    engine: str, database: str, conn_block: str, store_block: str
) -> BackupMySQLParams:
    return BackupMySQLParams(
        source=database,
        database=database,
        engine=engine,  # type: ignore[arg-type]
        connection_block=conn_block,
        store_block=store_block,
    )


def drill_params(source: str, store_block: str, server_block: str, backup: str = "latest"):  # type: ignore[no-untyped-def]
    return RestoreDrillParams(
        source=source, backup=backup, store_block=store_block, drill_server_block=server_block
    )


def regions_copy(golden, engine: str, tmp_path: Path) -> tuple[Path, str, BackupManifest]:
    """A per-test copy of an engine's golden backup: (root, store block name, manifest)."""
    root, manifest = golden[engine]
    copy = tmp_path / "regions"
    shutil.copytree(root, copy)
    return copy, save_block(local_store(copy)), manifest


def object_path(root: Path, region: str, manifest: BackupManifest) -> Path:
    return root / region / manifest.object_key(manifest.objects[0].name)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def markdown_of(flow_run_id: uuid.UUID) -> str:
    for artifact in artifacts_of(flow_run_id):
        if artifact.type == "markdown" and (artifact.key or "").startswith("restore-drill-"):
            return str(artifact.data)
    raise AssertionError("no drill report")


def assert_throwaway_gone(report: str, home: Path) -> None:
    """The report names the throwaway server's port and folder; both must be gone."""
    match = re.search(
        r"throwaway server on port (\d+) (?:stopped|not running), (\S+) deleted", report
    )
    assert match, report[-600:]
    port, folder = int(match.group(1)), match.group(2)
    assert not Path(folder).exists()
    assert not port_open("127.0.0.1", port)
    assert not processes_mentioning(folder), "a server process still runs on the folder"
    assert not list((home / "drill-servers").glob("*")), "a throwaway folder was left behind"


# -- round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_round_trip_restores_identical_tables(
    engine: str, golden, source_db: str, mysql_root: MySQLConnection
) -> None:
    root, manifest = golden[engine]
    tables = sorted(manifest.tables)
    source_sums = table_checksums(mysql_root, source_db, tables)

    assert manifest.engine == engine and len(manifest.regions) == 2
    assert {t: f.checksum for t, f in manifest.tables.items()} == source_sums
    if engine != "mysqldump":  # mysqldump's lock bracket belongs to tests/test_backup_mysql.py
        assert manifest.restore_hints["exact_snapshot"] == 1
    copies = [object_path(root, region, manifest).read_bytes() for region in REGIONS]
    assert copies[0] == copies[1]
    if engine == "mydumper":
        assert manifest.mydumper is not None and manifest.objects[0].name == "mydumper.tar.zst"
        names = {f.name for f in manifest.mydumper.files}
        chunks = {n for n in names if n.startswith(f"{source_db}.experiments.0")}
        assert len(chunks) >= 2 and "metadata" in names  # mydumper splits by estimate
        assert manifest.mydumper.rows_per_chunk == 1000
        assert manifest.restore_hints["files"] == len(names)
    if engine == "physical":
        assert manifest.physical is not None and manifest.physical.exact_by == "binlog-position"
        assert manifest.physical.databases == [source_db, "mysql"]
        assert manifest.physical.to_lsn and manifest.binlog_file and manifest.binlog_position

    store = LocalFolderStore("local-a", root / "local-a")
    if engine == "physical":
        scratch = create_scratch_server("drill_roundtrip", [mysql_root.port])
        try:
            conn = scratch.connection(source_db)
            restore_physical(manifest, store, conn, source_db, scratch_server=scratch)
            check_restored(conn, source_db, tables, source_sums)
        finally:
            scratch.remove()
        assert not scratch.workdir.exists() and not scratch.running
        assert scratch.socket_dir and not scratch.socket_dir.exists()
        return
    name = f"drill_rt_{uuid.uuid4().hex[:8]}"
    marker = DrillMarker("test", source_db, manifest.backup_id, datetime.now(UTC))
    create_scratch_database(mysql_root, name, marker, [source_db])
    try:
        restorer_for(manifest)(manifest, store, mysql_root, name, connections=2)
        check_restored(mysql_root, name, tables, source_sums)
    finally:
        drop_scratch_database(mysql_root, name, owned=True)


def check_restored(conn: MySQLConnection, database: str, tables: list[str], sums: dict) -> None:
    assert table_checksums(conn, database, tables) == sums
    assert run_sql(conn, "SELECT note FROM blobs WHERE id = 1", database)[0][0] == (
        "emoji 🧪🚀 and ünïcødé"
    )
    routines = run_sql(
        conn,
        f"SELECT routine_name FROM information_schema.routines WHERE routine_schema='{database}'",
    )
    triggers = run_sql(
        conn,
        f"SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema='{database}'",
    )
    assert routines == [("top_models",)] and triggers == [("experiments_count",)]
    assert run_sql(conn, "SELECT COUNT(*) FROM model_scores", database)[0][0] == 6


# -- drills -------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_drill_passes_and_reports_the_engine_and_its_rto(
    engine: str, golden, source_db: str, server_block: str, vibeops_home: Path, tmp_path: Path
) -> None:
    _, store_block, manifest = regions_copy(golden, engine, tmp_path)
    state = restore_drill(
        **params_of(drill_params(source_db, store_block, server_block, manifest.backup_id)),
        return_state=True,
    )
    assert state.is_completed(), state
    record = state.result()
    assert record.passed and record.engine == engine and record.rto_seconds
    report = markdown_of(state.state_details.flow_run_id)
    assert f"({engine}, zstd)" in report and "## RTO by engine" in report
    assert re.search(rf"\| {engine} \| 1 \| 1 \| {record.rto_seconds:.1f} \|", report), report
    [stored] = read_history(default_history_path(), source_db)
    assert stored.engine == engine
    if engine == "physical":
        assert "Throwaway server: throwaway server on port" in report
        assert_throwaway_gone(report, vibeops_home)


@pytest.mark.parametrize("engine", ENGINES)
def test_drill_falls_back_from_a_corrupt_copy(
    engine: str, golden, source_db: str, server_block: str, vibeops_home: Path, tmp_path: Path
) -> None:
    root, store_block, manifest = regions_copy(golden, engine, tmp_path)
    flip_byte(object_path(root, "local-a", manifest))
    record = restore_drill(
        **params_of(drill_params(source_db, store_block, server_block, manifest.backup_id))
    )
    assert record.passed and record.region == "local-b"
    assert record.corrupt_regions == ["local-a"]
    assert not list((vibeops_home / "drill-servers").glob("*"))


@pytest.mark.parametrize("case", ["validation-fails", "both-copies-corrupt"])
def test_failing_physical_drill_still_removes_its_throwaway_server(
    case: str, golden, source_db: str, server_block: str, vibeops_home: Path, tmp_path: Path
) -> None:
    root, store_block, manifest = regions_copy(golden, "physical", tmp_path)
    if case == "validation-fails":
        tables = dict(manifest.tables)
        tables["experiments"] = tables["experiments"].model_copy(update={"rows": 3001})
        for region in REGIONS:
            store = LocalFolderStore(region, root / region)
            current = parse_manifest(store.read_bytes(manifest.manifest_key))
            store.write_bytes(
                manifest.manifest_key, current.model_copy(update={"tables": tables}).to_json()
            )
    else:
        for region in REGIONS:
            flip_byte(object_path(root, region, manifest))
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # prove that a server really ran (or never started) on the folder
        while not stop.is_set():
            seen.extend(str(p) for p in (vibeops_home / "drill-servers").glob("*"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        state = restore_drill(
            **params_of(drill_params(source_db, store_block, server_block, manifest.backup_id)),
            return_state=True,
        )
    finally:
        stop.set()
        watcher.join()
    assert state.is_failed()
    with pytest.raises(DrillFailed) as info:
        state.result()
    assert seen, "no throwaway folder was ever created"
    assert not list((vibeops_home / "drill-servers").glob("*"))
    assert not any(processes_mentioning(folder) for folder in set(seen))
    if case == "validation-fails":
        assert "table experiments: rows 3000 != 3001 in the manifest" in str(info.value)
        assert_throwaway_gone(markdown_of(state.state_details.flow_run_id), vibeops_home)
    else:
        assert info.value.record.corrupt_regions == list(REGIONS)  # type: ignore[attr-defined]


# -- faults -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_db(mysql_root: MySQLConnection):
    """~40 MB of incompressible rows: long enough to interrupt mid-stream."""
    name = f"engbig_{uuid.uuid4().hex[:8]}"
    run_sql(mysql_root, f"CREATE DATABASE {name}")
    run_sql(
        mysql_root, "CREATE TABLE noise (id INT PRIMARY KEY, data LONGBLOB) ENGINE=InnoDB", name
    )
    conn = pymysql.connect(**mysql_root.pymysql_kwargs(name))
    with conn.cursor() as cur:
        for start in range(0, 400, 50):
            rows = [(i, os.urandom(100_000)) for i in range(start, start + 50)]
            cur.executemany("INSERT INTO noise VALUES (%s, %s)", rows)
    conn.close()
    yield name
    run_sql(mysql_root, f"DROP DATABASE {name}")


@pytest.mark.parametrize("engine", ENGINES)
def test_backup_killed_mid_stream_leaves_no_manifest(
    engine: str, mysql_root: MySQLConnection, big_db: str, tmp_path: Path
) -> None:
    killed: list[int] = []

    def kill_tool() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pids = [
                pid for pid, argv in child_argvs(TOOL_PROCESS[engine]) if b"--version" not in argv
            ]
            streaming = any(tmp_path.rglob("*.partial"))
            if pids and (streaming or engine == "mydumper"):  # mydumper dumps, then streams
                for pid in pids:
                    os.kill(pid, 9)
                    killed.append(pid)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_tool, daemon=True)
    killer.start()
    state = backup_mysql(
        **params_of(
            backup_params(engine, big_db, save_block(mysql_root), save_block(local_store(tmp_path)))
        ),
        return_state=True,
    )
    killer.join()
    assert killed, f"{TOOL_PROCESS[engine]} was never seen running"
    with pytest.raises(ExternalCommandError, match="killed"):
        state.result()
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "objects or a manifest were left"


@pytest.mark.parametrize("engine", ENGINES)
def test_corrupted_copy_fails_read_back_verification(engine: str, golden, tmp_path: Path) -> None:
    root, _, manifest = regions_copy(golden, engine, tmp_path)
    flip_byte(object_path(root, "local-b", manifest))
    stores = [LocalFolderStore(region, root / region) for region in REGIONS]
    obj = manifest.objects[0]
    written = StreamResult(obj.size, obj.sha256, obj.uncompressed_size or 0)
    key = manifest.object_key(obj.name)
    assert verify_copies(stores[:1], key, written, manifest.codec)[0].decompressed
    with pytest.raises(BackupVerificationError) as info:
        verify_copies(stores, key, written, manifest.codec)
    assert str(object_path(root, "local-b", manifest)) in str(info.value)
    assert str(object_path(root, "local-a", manifest)) not in str(info.value)


@pytest.mark.parametrize(
    ("engine", "package"), [("mydumper", "mydumper"), ("physical", "mariadb-backup")]
)
def test_missing_tool_fails_before_any_work_naming_the_package(
    engine: str,
    package: str,
    source_db: str,
    server_block: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    store = tmp_path / "regions"
    state = backup_mysql(
        **params_of(backup_params(engine, source_db, server_block, save_block(local_store(store)))),
        return_state=True,
    )
    with pytest.raises(ConfigurationError, match=f"apt-get install -y {package}$"):
        state.result()
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))


def test_physical_drill_without_its_tools_names_the_package_and_leaves_nothing(
    golden,
    source_db: str,
    server_block: str,
    vibeops_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, store_block, manifest = regions_copy(golden, "physical", tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(DrillFailed, match="apt-get install -y mariadb-backup"):
        restore_drill(
            **params_of(drill_params(source_db, store_block, server_block, manifest.backup_id))
        )
    assert not list((vibeops_home / "drill-servers").glob("*"))


@pytest.mark.parametrize("engine", ["mydumper", "physical"])
def test_writes_during_the_backup_keep_the_facts_exact(
    engine: str, mysql_root: MySQLConnection, server_block: str, tmp_path: Path
) -> None:
    """Rows committed while the tool runs: the manifest still matches the backup exactly."""
    name = f"engw_{uuid.uuid4().hex[:8]}"
    create_sample_database(mysql_root, name, rows=20_000)
    stop = threading.Event()
    written = [0]

    def write() -> None:
        conn = pymysql.connect(**mysql_root.pymysql_kwargs(name))
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute(
                    "INSERT INTO audit_log (actor, action, created_at) VALUES ('w', 'a', NOW(6))"
                )
                written[0] += 1
        conn.close()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        store_block = save_block(local_store(tmp_path))
        manifest = backup_mysql(**params_of(backup_params(engine, name, server_block, store_block)))
        before = written[0]
        time.sleep(0.3)
        assert written[0] > before, "the writer must still be committing after the backup"
        stop.set()
        writer.join()
        assert manifest.restore_hints["exact_snapshot"] == 1
        if engine == "physical":
            assert manifest.physical and manifest.physical.exact_by == "binlog-position"
        record = restore_drill(
            **params_of(
                RestoreDrillParams(
                    source=name, store_block=store_block, drill_server_block=server_block
                )
            )
        )
        assert record.passed, record.reasons
        assert (
            manifest.tables["audit_log"].rows
            < run_sql(mysql_root, "SELECT COUNT(*) FROM audit_log", name)[0][0]
        )
    finally:
        stop.set()
        writer.join()
        run_sql(mysql_root, f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.parametrize("engine", ["mydumper", "physical"])
def test_password_never_in_argv_logs_artifacts_or_events(
    engine: str, mysql_root: MySQLConnection, mariadb_server, source_db: str, tmp_path: Path
) -> None:
    secret = f"S3cret-{uuid.uuid4().hex}"
    user = f"en{uuid.uuid4().hex[:6]}"
    run_sql(mysql_root, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'")
    run_sql(mysql_root, f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%'")
    conn = MySQLConnection(host="127.0.0.1", port=mariadb_server.port, user=user, password=secret)
    conn_block = save_block(conn)
    seen: list[bytes] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            tools = ("mydumper", "myloader", "mariadb-backup", "mbstream", "mariadbd")
            seen.extend(argv for _, argv in child_argvs(*tools))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        store_block = save_block(local_store(tmp_path))
        backup = backup_mysql(
            **params_of(backup_params(engine, source_db, conn_block, store_block)),
            return_state=True,
        )
        drill = restore_drill(
            **params_of(
                drill_params(source_db, store_block, conn_block, backup.result().backup_id)
            ),
            return_state=True,
        )
    finally:
        stop.set()
        watcher.join()
    assert drill.is_completed(), drill
    tool = TOOL_PROCESS[engine].encode()
    assert any(tool in argv for argv in seen), f"{engine}'s tool was never observed"
    assert all(secret.encode() not in argv for argv in seen)
    for state in (backup, drill):
        assert secret not in run_texts(state.state_details.flow_run_id)


# -- pure rules ---------------------------------------------------------------------------------


def test_engine_parameter_or_the_blocks_default() -> None:
    assert resolve_engine("default", "physical") == "physical"
    assert resolve_engine("", "mydumper") == "mydumper"
    assert resolve_engine("mysqldump", "physical") == "mysqldump"
    with pytest.raises(ConfigurationError, match="choose one of mysqldump, mydumper, physical"):
        resolve_engine("xtrabackup", "mysqldump")


@pytest.mark.parametrize(
    ("version", "tool", "package"),
    [
        ("10.11.6-MariaDB-0+deb12u1-log", "mariadb-backup", "mariadb-backup"),
        ("11.4.2-MariaDB", "mariadb-backup", "mariadb-backup"),
        ("8.0.36", "xtrabackup", "percona-xtrabackup-80"),
        ("8.4.0", "xtrabackup", "percona-xtrabackup-84"),
        ("5.7.44-log", "xtrabackup", "percona-xtrabackup-24"),
    ],
)
def test_physical_tool_follows_the_server_version(version: str, tool: str, package: str) -> None:
    tools = physical_tools(server_flavor(version), version)
    assert (tools.tool, tools.package) == (tool, package)


def test_mysql_server_without_xtrabackup_names_the_percona_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match="apt-get install -y percona-xtrabackup-80"):
        physical_tools("mysql", "8.0.36").backup_binary()


def test_backup_log_finds_the_consistent_point_binlog_and_lsns() -> None:
    log = BackupLog("mariadb-backup")
    lines = [
        "[00] 2026-11-26 22:03:44 Started BACKUP STAGE BLOCK_DDL",
        "[00] 2026-11-26 22:03:44 Acquired locks for BACKUP STAGE BLOCK_COMMIT",
        "[00] 2026-11-26 22:03:45 Finishing BACKUP STAGE BLOCK_COMMIT",
        "[00] 2026-11-26 22:03:45 MySQL binlog position: filename 'binlog.000001', "
        "position '3679413', GTID of the last change '0-1-13'",
        "[00] 2026-11-26 22:03:45 Redo log (from LSN 44894 to 2188028) was copied.",
    ]
    assert [log.feed(line) for line in lines] == [False, True, False, False, False]
    assert (log.binlog_file, log.binlog_position, log.gtid) == ("binlog.000001", 3679413, "0-1-13")
    assert (log.from_lsn, log.to_lsn) == (44894, 2188028)
    xtra = BackupLog("xtrabackup")
    assert xtra.feed("Selecting LSN and binary log position from p_s.log_status")
    xtra.feed("Transaction log of lsn (18197068) to (18197078) was copied.")
    assert xtra.to_lsn == 18197078


def _record(engine: str | None, rto: float | None, passed: bool) -> DrillRecord:
    now = datetime.now(UTC)
    return DrillRecord(
        source="s",
        engine=engine,
        started_at=now,
        finished_at=now,
        rto_seconds=rto,
        rto_target_seconds=1800,
        rpo_target_seconds=3600,
        passed=passed,
        rows=10,
    )


def test_rto_by_engine_groups_history_in_engine_order() -> None:
    records = [
        _record("physical", 4.0, True),
        _record(None, 30.0, True),  # written before engines existed: mysqldump
        _record("mydumper", 12.0, True),
        _record("physical", None, False),
        _record("physical", 2.0, True),
        _record("mysqldump", 20.0, True),
    ]
    assert rto_by_engine(records) == [
        EngineRto("mysqldump", 2, 2, 20.0, 25.0, 20.0, 10),
        EngineRto("mydumper", 1, 1, 12.0, 12.0, 12.0, 10),
        EngineRto("physical", 3, 2, 2.0, 3.0, 2.0, 10),
    ]


def test_old_manifests_without_engine_details_still_parse(golden) -> None:
    _, manifest = golden["mydumper"]
    data = manifest.model_dump(mode="json")
    assert parse_manifest(manifest.to_json()).mydumper == manifest.mydumper
    for key in ("engine", "mydumper", "physical"):
        data.pop(key)
    old = parse_manifest(json.dumps(data).encode())
    assert old.engine == "mysqldump" and old.mydumper is None and old.physical is None
    assert restorer_for(old) is restore_logical_dump
    broken = old.model_copy(update={"engine": "mydumper"})
    with pytest.raises(ConfigurationError, match="no mydumper file list"):
        restorer_for(broken)(broken, LocalFolderStore("a", Path("/nonexistent")), None, "drill_x")
