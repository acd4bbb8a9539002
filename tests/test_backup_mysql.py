"""backup-mysql end to end: a private MariaDB, local folders and the GCS API server."""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import zstandard

from blocks import BackupStore, MySQLConnection
from flows.backup import BackupMySQLParams, backup_mysql
from flows.forms import params_of
from tasks.catalog import scan_backups
from tasks.errors import (
    DatabaseAuthError,
    DatabaseNotFound,
    DatabaseUnreachable,
    DestinationMissing,
    ExternalCommandError,
    StorageError,
)
from tasks.local_stack import GcsEmulator, emulator_environment, free_port
from tasks.mysql import table_checksums
from tasks.sample_data import create_sample_database
from tasks.storage import LocalFolderStore, open_store
from tests.fixtures.gcs import gcs_destination
from tests.fixtures.mysql import run_sql
from tests.helpers import child_argvs, fill_noise, load_sql, local_store, run_texts, save_block

pytestmark = pytest.mark.mysql


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same retry counts and conditions, shorter delays (the real tasks still run)."""
    import flows.backup as module

    for name in ("preflight", "stream_dump", "verify_backup", "commit_manifest"):
        task_ = getattr(module, name)
        monkeypatch.setattr(module, name, task_.with_options(retry_delay_seconds=0.2))


EDGE_CASES = [
    "CREATE TABLE blobs (id INT PRIMARY KEY, raw LONGBLOB NULL, note TEXT NULL) ENGINE=InnoDB",
    "INSERT INTO blobs VALUES (1, UNHEX('00FF0A0D5C27225A1A'), 'emoji 🧪🚀 and ünïcødé'),"
    " (2, NULL, NULL), (3, REPEAT(UNHEX('00'), 70000), 'nul bytes'),"
    " (4, UNHEX(''), 'quote '' and backslash \\\\ and newline \\n')",
]


def _state_exception(state) -> BaseException:
    with pytest.raises(Exception) as info:
        state.result()
    return info.value


def _no_committed_backup(store: BackupStore, source: str) -> None:
    for destination in store.destinations:
        entries = scan_backups(open_store(destination), source)
        assert all(not entry.committed for entry in entries), entries
        for entry in entries:
            assert not any(obj.key.endswith("manifest.json") for obj in entry.objects)


@pytest.fixture
def sample_db(mysql_root: MySQLConnection, fresh_database: str) -> str:
    create_sample_database(mysql_root, fresh_database, rows=3000)
    for statement in EDGE_CASES:
        run_sql(mysql_root, statement, fresh_database)
    return fresh_database


def _params(conn_name: str, store_name: str, database: str, **extra) -> BackupMySQLParams:
    return BackupMySQLParams(
        source=database,
        database=database,
        connection_block=conn_name,
        store_block=store_name,
        **extra,
    )


def test_round_trip_restores_identical_tables_and_routines(
    mysql_root: MySQLConnection, sample_db: str, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    manifest = backup_mysql(
        **params_of(_params(save_block(mysql_root), save_block(store), sample_db))
    )

    assert manifest.codec == "zstd" and len(manifest.regions) == 2
    assert set(manifest.tables) == {
        "ai_models",
        "audit_log",
        "blobs",
        "experiments",
        "experiment_totals",
    }
    assert manifest.tables["experiments"].rows == 3000
    assert manifest.views == ["model_scores"] and manifest.routines == ["top_models"]
    source_sums = table_checksums(mysql_root, sample_db, sorted(manifest.tables))
    assert {t: f.checksum for t, f in manifest.tables.items()} == source_sums

    # Both regions hold byte-identical, committed copies.
    copies = [LocalFolderStore(d.region, d.path) for d in store.destinations]
    blobs = [s.read_bytes(manifest.object_key("dump.sql.zst")) for s in copies]
    assert blobs[0] == blobs[1]
    assert all(s.exists(manifest.manifest_key) for s in copies)

    target = f"r_{uuid.uuid4().hex[:8]}"
    run_sql(mysql_root, f"CREATE DATABASE {target} CHARACTER SET utf8mb4")
    try:
        load_sql(
            mysql_root, target, zstandard.ZstdDecompressor().decompressobj().decompress(blobs[0])
        )
        assert table_checksums(mysql_root, target, sorted(manifest.tables)) == source_sums
        routines = run_sql(
            mysql_root,
            f"SELECT routine_name FROM information_schema.routines WHERE routine_schema='{target}'",
        )
        assert routines == [("top_models",)]
        triggers = run_sql(
            mysql_root,
            f"SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema='{target}'",
        )
        assert triggers == [("experiments_count",)]
        assert run_sql(mysql_root, "SELECT COUNT(*) FROM model_scores", target)[0][0] == 6
        emoji = run_sql(mysql_root, "SELECT note FROM blobs WHERE id = 1", target)[0][0]
        assert emoji == "emoji 🧪🚀 and ünïcødé"
    finally:
        run_sql(mysql_root, f"DROP DATABASE {target}")


def test_gzip_codec_passes_the_seeds_gzip_check(
    mysql_root: MySQLConnection, sample_db: str, tmp_path: Path
) -> None:
    store = local_store(tmp_path, regions=("only",))
    manifest = backup_mysql(
        **params_of(_params(save_block(mysql_root), save_block(store), sample_db, codec="gzip"))
    )
    path = tmp_path / "only" / manifest.object_key("dump.sql.gz")
    subprocess.run(["gzip", "-t", str(path)], check=True)
    assert b"CREATE TABLE `experiments`" in gzip.decompress(path.read_bytes())


def test_backup_to_gcs_and_local_in_one_pass(
    mysql_root: MySQLConnection, sample_db: str, tmp_path: Path, gcs_bucket_factory
) -> None:
    bucket = gcs_bucket_factory()
    store = BackupStore(
        destinations=[gcs_destination("us-central1", bucket), local_store(tmp_path).destinations[0]]
    )
    manifest = backup_mysql(
        **params_of(_params(save_block(mysql_root), save_block(store), sample_db))
    )
    gcs = open_store(store.destinations[0])
    assert manifest.regions[0].uri.startswith(f"gs://{bucket}/mysql/")
    data = gcs.read_bytes(manifest.object_key("dump.sql.zst"))
    local = LocalFolderStore("local-a", tmp_path / "local-a")
    assert data == local.read_bytes(manifest.object_key("dump.sql.zst"))
    assert scan_backups(gcs, sample_db)[0].committed


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("unreachable", DatabaseUnreachable, "cannot reach MySQL"),
        ("wrong-password", DatabaseAuthError, "fix the user/password"),
        ("missing-database", DatabaseNotFound, "does not exist"),
    ],
)
def test_bad_source_fails_clearly_and_writes_nothing(
    case: str,
    error: type[Exception],
    message: str,
    mysql_root: MySQLConnection,
    mariadb_server,
    sample_db: str,
    tmp_path: Path,
) -> None:
    secret = f"Wr0ng-{uuid.uuid4().hex}"
    conn = mysql_root.model_copy()
    database = sample_db
    if case == "unreachable":
        conn = MySQLConnection(
            host="127.0.0.1", port=free_port(), user="root", connect_timeout_seconds=2
        )
    elif case == "wrong-password":
        user = f"u{uuid.uuid4().hex[:8]}"
        run_sql(mysql_root, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-one'")
        conn = MySQLConnection(
            host="127.0.0.1", port=mariadb_server.port, user=user, password=secret
        )
    else:
        database = "no_such_db"
    store = local_store(tmp_path)
    state = backup_mysql(
        **params_of(_params(save_block(conn), save_block(store), database)), return_state=True
    )
    exc = _state_exception(state)
    assert isinstance(exc, error), exc
    assert message in str(exc)
    _no_committed_backup(store, database)
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "a failed run left files"
    assert secret not in run_texts(state.state_details.flow_run_id)


def test_missing_bucket_is_named_and_nothing_written(
    mysql_root: MySQLConnection, sample_db: str, tmp_path: Path, gcs_server
) -> None:
    store = BackupStore(
        destinations=[
            local_store(tmp_path).destinations[0],
            gcs_destination("eu-west1", "no-such-bucket"),
        ]
    )
    state = backup_mysql(
        **params_of(_params(save_block(mysql_root), save_block(store), sample_db)),
        return_state=True,
    )
    exc = _state_exception(state)
    assert isinstance(exc, DestinationMissing)
    assert "gs://no-such-bucket does not exist" in str(exc)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.mark.timeout(120)
def test_unreachable_gcs_fails_within_its_retry_deadline(
    mysql_root: MySQLConnection, sample_db: str, tmp_path: Path
) -> None:
    # A GCS API server that is down: every call gives up after the destination's deadline
    # (the client's own default would keep retrying for 120 s per call, per task attempt).
    down = GcsEmulator()
    with emulator_environment(down.endpoint):
        store = BackupStore(
            destinations=[
                local_store(tmp_path).destinations[0],
                gcs_destination("eu-west1", "unreachable", retry_deadline_seconds=1),
            ]
        )
        state = backup_mysql(
            **params_of(_params(save_block(mysql_root), save_block(store), sample_db)),
            return_state=True,
        )
    exc = _state_exception(state)
    assert isinstance(exc, StorageError), exc
    assert "region eu-west1: bucket unreachable" in str(exc)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.fixture(scope="module")
def big_db(mysql_root: MySQLConnection):
    """~40 MB of incompressible rows: long enough to interrupt mid-stream."""
    name = f"big_{uuid.uuid4().hex[:8]}"
    run_sql(mysql_root, f"CREATE DATABASE {name}")
    run_sql(
        mysql_root, "CREATE TABLE noise (id INT PRIMARY KEY, data LONGBLOB) ENGINE=InnoDB", name
    )
    fill_noise(mysql_root, name, 400)
    yield name
    run_sql(mysql_root, f"DROP DATABASE {name}")


def test_password_never_in_argv_logs_artifacts_or_events(
    mysql_root: MySQLConnection, mariadb_server, big_db: str, tmp_path: Path
) -> None:
    secret = f"S3cret-{uuid.uuid4().hex}"
    user = f"bk{uuid.uuid4().hex[:6]}"
    run_sql(mysql_root, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'")
    run_sql(
        mysql_root,
        f"GRANT SELECT, RELOAD, PROCESS, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* TO '{user}'@'%'",
    )
    conn = MySQLConnection(host="127.0.0.1", port=mariadb_server.port, user=user, password=secret)
    seen: list[bytes] = []
    stop = threading.Event()

    def watch_ps() -> None:
        while not stop.is_set():
            seen.extend(argv for _, argv in child_argvs("mariadb-dump", "mysqldump"))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch_ps, daemon=True)
    watcher.start()
    try:
        state = backup_mysql(
            **params_of(_params(save_block(conn), save_block(local_store(tmp_path)), big_db)),
            return_state=True,
        )
    finally:
        stop.set()
        watcher.join()
    assert state.is_completed(), state
    assert seen, "the dump process was never observed"
    assert all(secret.encode() not in argv for argv in seen)
    # `mariadb-dump --version` (the manifest's tool version) connects nowhere; every other call
    # must read its credentials from a defaults file.
    connecting = [argv for argv in seen if argv.split(b"\0")[1:2] != [b"--version"]]
    assert connecting, "the connecting dump process was never observed"
    without_defaults_file = [argv for argv in connecting if b"--defaults-extra-file=" not in argv]
    assert not without_defaults_file, without_defaults_file
    assert secret not in run_texts(state.state_details.flow_run_id)


def test_dump_killed_mid_stream_leaves_no_backup(
    mysql_root: MySQLConnection, big_db: str, tmp_path: Path
) -> None:
    killed: list[int] = []

    def kill_dump() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for pid, argv in child_argvs("mariadb-dump"):
                if b"--version" in argv:
                    continue
                time.sleep(0.2)
                os.kill(pid, 9)
                killed.append(pid)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_dump, daemon=True)
    killer.start()
    store = local_store(tmp_path)
    state = backup_mysql(
        **params_of(_params(save_block(mysql_root), save_block(store), big_db)), return_state=True
    )
    killer.join()
    assert killed
    exc = _state_exception(state)
    assert isinstance(exc, ExternalCommandError) and "killed" in str(exc)
    _no_committed_backup(store, big_db)
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "partial objects left behind"


def test_gcs_server_stopped_mid_upload_leaves_no_backup(
    mysql_root: MySQLConnection, big_db: str, tmp_path: Path, gcs_server
) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    doomed = GcsEmulator().start()
    try:
        with emulator_environment(doomed.endpoint):
            client = storage.Client(project="vibeops-test", credentials=AnonymousCredentials())
            client.create_bucket("doomed")
            store = BackupStore(
                destinations=[
                    local_store(tmp_path).destinations[0],
                    gcs_destination(
                        "eu-west1", "doomed", chunk_size_mib=1, retry_deadline_seconds=3
                    ),
                ]
            )
            store_name = save_block(store)

            def stop_mid_upload() -> None:
                # Stop GCS once the stream is under way (the local copy passed 4 MiB).
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    partials = list(tmp_path.rglob("*.partial"))
                    with contextlib.suppress(OSError):
                        if any(path.stat().st_size > 4 << 20 for path in partials):
                            break
                    time.sleep(0.01)
                doomed.stop()

            threading.Thread(target=stop_mid_upload, daemon=True).start()
            state = backup_mysql(
                **params_of(_params(save_block(mysql_root), store_name, big_db)), return_state=True
            )
    finally:
        doomed.stop()
    exc = _state_exception(state)
    assert isinstance(exc, StorageError | DestinationMissing), exc
    assert "eu-west1" in str(exc)
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "the local region kept a copy"
