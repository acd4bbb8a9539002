"""archive-binlogs end to end: private MariaDB servers with log_bin ON and binlog_format=ROW."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pymysql
import pytest
from prefect.settings import PREFECT_API_URL

from blocks import MySQLConnection
from flows.archive_binlogs import archive_binlogs
from flows.backup import backup_mysql
from tasks.binlog_catalog import (
    list_segments,
    newest_restorable_point,
    recovery_chain,
    scan_segments,
)
from tasks.binlog_io import download_segment
from tasks.errors import BinlogGapDetected, ConfigurationError
from tasks.local_stack import PrivateMariaDB
from tasks.storage import LocalFolderStore
from tests.fixtures.mysql import run_sql
from tests.helpers import child_argvs, events_of, local_store, run_texts, save_block

pytestmark = pytest.mark.mysql


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same retry counts and conditions, shorter delays (the real tasks still run)."""
    import flows.archive_binlogs as module

    for name in ("preflight_binlog_archive", "read_archive", "bound_lag", "archive_one"):
        monkeypatch.setattr(
            module, name, getattr(module, name).with_options(retry_delay_seconds=0.2)
        )


def _root(server: PrivateMariaDB) -> MySQLConnection:
    return MySQLConnection(host="127.0.0.1", port=server.port, user="root", database="")


def _archive_user(server: PrivateMariaDB, reload: bool = False) -> tuple[MySQLConnection, str]:
    """A user with only REPLICATION SLAVE, BINLOG MONITOR (+ RELOAD); its password has # and "."""
    secret = f'p#{uuid.uuid4().hex}"q'
    user = f"arch{uuid.uuid4().hex[:6]}"
    root = _root(server)
    quoted = secret.replace("\\", "\\\\").replace("'", "\\'")
    run_sql(root, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{quoted}'")
    grants = "REPLICATION SLAVE, BINLOG MONITOR" + (", RELOAD" if reload else "")
    run_sql(root, f"GRANT {grants} ON *.* TO '{user}'@'%'")
    return MySQLConnection(host="127.0.0.1", port=server.port, user=user, password=secret), secret


def _app_database(server: PrivateMariaDB) -> None:
    root = _root(server)
    run_sql(root, "CREATE DATABASE app")
    run_sql(
        root,
        "CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL, "
        "note VARCHAR(2000) NOT NULL DEFAULT '') ENGINE=InnoDB",
    )


def _write(server: PrivateMariaDB, rows: int = 5) -> None:
    run_sql(_root(server), f"INSERT INTO t (v) SELECT seq FROM seq_1_to_{rows}", "app")


def _flush(server: PrivateMariaDB) -> None:
    run_sql(_root(server), "FLUSH BINARY LOGS")


def _first_binlog(server: PrivateMariaDB) -> int:
    return int(str(run_sql(_root(server), "SHOW BINARY LOGS")[0][0]).split(".")[1])


def _purge_to(server: PrivateMariaDB, index: int, timeout_s: float = 30) -> int:
    """PURGE BINARY LOGS TO binlog.<index>; returns the index of the first file left.

    PURGE silently stops at the first file crash recovery still needs: one whose transactions
    InnoDB has not yet reported durable (the binlog checkpoint). With
    innodb_flush_log_at_trx_commit=2 that report waits for InnoDB's next log flush (about
    once a second, later under load), so files just rotated stay until then. FLUSH ENGINE
    LOGS asks for that flush; the checkpoint itself still completes in the background, so
    retry until the files before `index` are gone or `timeout_s` passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        run_sql(_root(server), "FLUSH ENGINE LOGS")
        run_sql(_root(server), f"PURGE BINARY LOGS TO 'binlog.{index:06d}'")
        first = _first_binlog(server)
        if first >= index or time.monotonic() > deadline:
            return first
        time.sleep(0.1)


def _gtid_pos(server: PrivateMariaDB) -> str:
    return str(run_sql(_root(server), "SELECT @@GLOBAL.gtid_binlog_pos")[0][0])


def _base_backup(server: PrivateMariaDB, store_name: str):  # type: ignore[no-untyped-def]
    return backup_mysql(
        source="app",
        database="app",
        connection_block=save_block(_root(server)),
        store_block=store_name,
        record_checksums=False,
    )


def _with_base_backup(server: PrivateMariaDB, tmp_path: Path) -> tuple[MySQLConnection, str]:
    """Database `app`, a two-folder store, an archive user with RELOAD, one base backup."""
    _app_database(server)
    store_name = save_block(local_store(tmp_path))
    conn, _ = _archive_user(server, reload=True)
    _base_backup(server, store_name)
    return conn, store_name


def _archive(conn: MySQLConnection, store_name: str, **extra):  # type: ignore[no-untyped-def]
    return archive_binlogs(
        source="app",
        connection_block=save_block(conn),
        store_block=store_name,
        return_state=True,
        **extra,
    )


def _regions(root: Path) -> list[LocalFolderStore]:
    return [LocalFolderStore(r, root / r, create=False) for r in ("local-a", "local-b")]


class Writer(threading.Thread):
    """Inserts and updates until stopped; logs each commit's GTID position."""

    def __init__(self, server: PrivateMariaDB) -> None:
        super().__init__(daemon=True)
        self.conn = pymysql.connect(**_root(server).pymysql_kwargs("app"))
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.conn.cursor() as cur:
                while not self.stop.is_set():
                    cur.execute("INSERT INTO app.t (v) VALUES (%s)", (self.commits,))
                    cur.execute("UPDATE app.t SET v = v + 1 WHERE id = %s", (cur.lastrowid,))
                    self.commits += 1
                    time.sleep(0.002)
        except BaseException as exc:
            self.error = exc
        finally:
            self.conn.close()


def test_preflight_with_binary_logging_off_names_log_bin_and_row(tmp_path: Path) -> None:
    server = PrivateMariaDB(base_dir=tmp_path / "nobinlog", binary_log=False).start()
    try:
        state = _archive(_root(server), save_block(local_store(tmp_path / "store")))
    finally:
        server.stop()
    assert state.is_failed()
    with pytest.raises(ConfigurationError) as info:
        state.result()
    assert "log_bin" in str(info.value) and "binlog_format=ROW" in str(info.value)
    assert not (tmp_path / "store" / "local-a" / "mysql").exists()


def test_writer_during_archiving_minimal_grants_byte_identical_unbroken_no_secret(
    binlog_server: PrivateMariaDB, tmp_path: Path
) -> None:
    _app_database(binlog_server)
    store_name = save_block(local_store(tmp_path))
    conn, secret = _archive_user(binlog_server)  # no RELOAD: flushing is refused, noted
    writer = Writer(binlog_server)
    writer.start()
    seen: list[bytes] = []
    stop_watch = threading.Event()

    def watch() -> None:
        while not stop_watch.is_set():
            seen.extend(argv for _, argv in child_argvs("mariadb-binlog"))
            time.sleep(0.003)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        time.sleep(0.5)
        base = _base_backup(binlog_server, store_name)
        states = []
        for _ in range(3):
            time.sleep(0.7)
            _flush(binlog_server)  # the server rotating on its own
            states.append(_archive(conn, store_name))
        writer.stop.set()
        writer.join(timeout=30)
        assert writer.error is None and writer.commits > 50
        _flush(binlog_server)
        final_gtid = _gtid_pos(binlog_server)
        states.append(_archive(conn, store_name))
    finally:
        writer.stop.set()
        stop_watch.set()
        watcher.join()
    assert all(s.is_completed() for s in states), [s.message for s in states]
    # While the writer ran, the runs wanted to flush and were refused (no RELOAD): said so.
    assert any("RELOAD" in note for state in states[:3] for note in state.result().notes)

    a, b = _regions(tmp_path)
    segments = list_segments(a, "app")
    assert [(s.sequence, s.file) for s in segments] == [
        (s.sequence, s.file) for s in list_segments(b, "app")
    ]
    for seg in segments:  # byte-identical to the server's own files, from both regions
        original = (binlog_server.base_dir / seg.file).read_bytes()
        for store in (a, b):
            copy = download_segment(store, seg, tmp_path / "dl" / store.region)
            assert copy.read_bytes() == original, seg.file
    chain = recovery_chain(base, segments)
    assert chain.gap is None, chain.gap
    assert chain.segments[0].file == base.binlog_file
    assert chain.gtid == final_gtid  # every commit of the writer is archived
    point = newest_restorable_point(a, "app")
    assert point is not None and point.kind == "binlog" and point.gtid == final_gtid

    assert seen, "mariadb-binlog was never observed"
    assert all(secret.encode() not in argv for argv in seen)
    assert all(argv.split(b"\0")[1].startswith(b"--defaults-extra-file=") for argv in seen)
    for state in states:
        assert secret not in run_texts(state.state_details.flow_run_id)
    for path in tmp_path.rglob("*.json"):
        assert secret not in path.read_text()
    archived = events_of("vibeops.binlog.archived", states[-1].state_details.flow_run_id)
    assert archived and archived[0]["payload"]["gtid"]


def test_flush_bounds_the_lag_and_covers_the_last_write(
    binlog_server: PrivateMariaDB, tmp_path: Path
) -> None:
    conn, store_name = _with_base_backup(binlog_server, tmp_path)
    _write(binlog_server, 20)
    last_write = _gtid_pos(binlog_server)
    state = _archive(conn, store_name)
    assert state.is_completed(), state.message
    run = state.result()
    assert run.flushed and run.lag_before_s is not None
    assert run.point is not None and run.point.gtid == last_write
    # Nothing new: no flush, nothing archived, still fine.
    again = _archive(conn, store_name).result()
    assert not again.flushed and again.archived == []


def test_purged_before_archived_is_detected_and_named(
    binlog_server: PrivateMariaDB, tmp_path: Path
) -> None:
    conn, store_name = _with_base_backup(binlog_server, tmp_path)
    assert _archive(conn, store_name).is_completed()
    last = max(s.index for s in list_segments(_regions(tmp_path)[0], "app"))
    for _ in range(3):
        _write(binlog_server)
        _flush(binlog_server)
    # The server purges closed files before any archive run copied them (it keeps those its
    # crash recovery still needs, so read what is left).
    first_left = _purge_to(binlog_server, last + 3)
    assert first_left >= last + 2, "nothing was purged"
    state = _archive(conn, store_name, flush=False)
    assert state.is_failed()
    with pytest.raises(BinlogGapDetected) as info:
        state.result()
    missing = f"binlog.{last + 1:06d}" + (
        f"..binlog.{first_left - 1:06d}" if first_left - 1 > last + 1 else ""
    )
    assert missing in str(info.value) and "backup-mysql" in str(info.value)
    gaps = events_of("vibeops.binlog.gap", state.state_details.flow_run_id)
    assert gaps and gaps[0]["payload"]["kind"] == "purged-before-archived"
    assert gaps[0]["payload"]["missing"] == missing
    # What follows the gap is archived all the same.
    files = {s.file for s in list_segments(_regions(tmp_path)[0], "app")}
    assert f"binlog.{first_left:06d}" in files
    # A new base makes later writes restorable again: the gap is behind it.
    _base_backup(binlog_server, store_name)
    _write(binlog_server)
    assert _archive(conn, store_name).is_completed()


def test_reset_master_starts_a_new_sequence_until_a_new_base(
    binlog_server: PrivateMariaDB, tmp_path: Path
) -> None:
    conn, store_name = _with_base_backup(binlog_server, tmp_path)
    _write(binlog_server)
    assert _archive(conn, store_name).is_completed()
    region = _regions(tmp_path)[0]
    old_sequence = {s.sequence for s in list_segments(region, "app")}
    assert len(old_sequence) == 1

    time.sleep(1.1)  # the new sequence's first file is created in a later second
    run_sql(_root(binlog_server), "RESET MASTER")
    _write(binlog_server)
    state = _archive(conn, store_name)
    assert state.is_failed()
    with pytest.raises(BinlogGapDetected, match="RESET MASTER"):
        state.result()
    gaps = events_of("vibeops.binlog.gap", state.state_details.flow_run_id)
    assert gaps and gaps[0]["payload"]["kind"] == "new-sequence"
    sequences = {s.sequence for s in list_segments(region, "app")}
    assert len(sequences) == 2 and old_sequence < sequences
    # Still failing while the newest base cannot reach the new sequence ...
    assert _archive(conn, store_name).is_failed()
    # ... and fine again once a base is taken after the reset.
    new_base = _base_backup(binlog_server, store_name)
    _write(binlog_server)
    state = _archive(conn, store_name)
    assert state.is_completed(), state.message
    point = newest_restorable_point(region, "app")
    assert point is not None and point.base.backup_id == new_base.backup_id
    assert point.gtid == _gtid_pos(binlog_server)
    assert {s.sequence for s in point.chain.segments} == sequences - old_sequence


def test_killed_mid_copy_leaves_no_manifest_and_the_next_run_resumes(
    binlog_server: PrivateMariaDB, tmp_path: Path
) -> None:
    conn, store_name = _with_base_backup(binlog_server, tmp_path)
    conn_name = save_block(conn)
    assert _archive(conn, store_name).is_completed()
    # ~30 MB of row events in one file, compressed at zstd level 19: seconds of work to kill.
    run_sql(
        _root(binlog_server),
        "INSERT INTO t (v, note) SELECT seq, REPEAT(MD5(seq), 30) FROM seq_1_to_30000",
        "app",
    )
    _flush(binlog_server)
    script = (
        "from flows.archive_binlogs import archive_binlogs\n"
        f"archive_binlogs(source='app', connection_block='{conn_name}', "
        f"store_block='{store_name}', flush=False, compression_level=19)\n"
    )
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not list(tmp_path.rglob("*.zst.partial")):
            assert child.poll() is None, "the archive finished before it could be killed"
            time.sleep(0.01)
        assert list(tmp_path.rglob("*.zst.partial")), "no upload seen within 180 s"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    for region in _regions(tmp_path):
        listing = scan_segments(region, "app")
        big = max(listing.segments, key=lambda s: s.index)
        assert big.raw_size < 1_000_000  # the big file has no manifest anywhere
    state = _archive(conn, store_name, flush=False)
    assert state.is_completed(), state.message
    a, b = _regions(tmp_path)
    big = max(list_segments(a, "app"), key=lambda s: s.raw_size)
    assert big.raw_size > 10_000_000
    assert big.manifest_key in {i.key for i in b.list_objects("mysql/app/binlog/")}
    original = (binlog_server.base_dir / big.file).read_bytes()
    assert download_segment(b, big, tmp_path / "dl").read_bytes() == original
    assert not list(tmp_path.rglob("*.zst.partial"))  # the resumed upload replaced the debris
    assert datetime.now(UTC) - (big.archived_at) < timedelta(minutes=10)
