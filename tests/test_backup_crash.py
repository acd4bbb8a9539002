"""A backup flow-run process killed with SIGKILL mid-dump: no orphaned tool survives, its
unfinished uploads are listed as incomplete, and cleanup-drills removes them only once
they are older than stale_after.

The flow runs in its own process against the session's Prefect API, like a worker's flow run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pymysql
import pytest
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from blocks import MySQLConnection
from flows.restore_drill import DEBRIS_ITEM, cleanup_drills
from tasks.catalog import scan_backups
from tasks.child_process import spawn
from tasks.storage import LocalFolderStore, open_store
from tests.fixtures.mysql import run_sql
from tests.helpers import fill_noise, local_store, save_block

pytestmark = pytest.mark.mysql

PROJECT_DIR = Path(__file__).resolve().parents[1]
FLOW_RUNNER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from flows.backup import backup_mysql
backup_mysql(source=sys.argv[2], database=sys.argv[2], connection_block=sys.argv[3],
             store_block=sys.argv[4])
"""


def children_of(pid: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            program = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and program.endswith(name.encode()):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def stuck_database(mysql_root: MySQLConnection):
    """~30 MB in `noise`, then `zz_blocked`, write-locked by another session: the dump
    streams `noise` into both regions and then waits on the lock, mid-dump, forever."""
    name = f"crash_{uuid.uuid4().hex[:8]}"
    run_sql(mysql_root, f"CREATE DATABASE {name}")
    run_sql(mysql_root, "CREATE TABLE noise (id INT PRIMARY KEY, data LONGBLOB)", name)
    run_sql(mysql_root, "CREATE TABLE zz_blocked (id INT PRIMARY KEY)", name)
    fill_noise(mysql_root, name, 300)
    conn = pymysql.connect(**mysql_root.pymysql_kwargs(name))
    with conn.cursor() as cur:
        cur.execute("LOCK TABLES zz_blocked WRITE")
    yield name
    with conn.cursor() as cur:
        cur.execute("UNLOCK TABLES")
    conn.close()
    run_sql(mysql_root, f"DROP DATABASE {name}")


def test_killed_flow_run_leaves_no_orphan_and_its_debris_is_listed_then_cleaned(
    mysql_root: MySQLConnection, stuck_database: str, tmp_path: Path, monkeypatch
) -> None:
    store = local_store(tmp_path / "regions")
    store_name, conn_name = save_block(store), save_block(mysql_root)
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FLOW_RUNNER,
            str(PROJECT_DIR),
            stuck_database,
            conn_name,
            store_name,
        ],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    regions = [tmp_path / "regions" / d.region for d in store.destinations]
    dumps: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and runner.poll() is None:
            dumps = children_of(runner.pid, "mariadb-dump")
            partials = [p for region in regions for p in region.rglob("*.partial")]
            if dumps and len(partials) == 2 and all(p.stat().st_size > 0 for p in partials):
                break
            time.sleep(0.2)
        assert runner.poll() is None, "the backup ended before it could be killed"
        assert dumps, "no dump tool was seen"
        time.sleep(1)  # the dump has streamed `noise` and waits on the lock
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in dumps):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in dumps), "the dump tool outlived its flow run"

    for destination in store.destinations:
        entries = scan_backups(open_store(destination), stuck_database)
        assert len(entries) == 1 and entries[0].incomplete, entries
        assert [p.key.rsplit("/", 1)[1] for p in entries[0].partials] == ["dump.sql.zst.partial"]

    monkeypatch.setenv("COLUMNS", "250")
    listing = CliRunner().invoke(
        __import__("vibeops_cli").app,
        ["backups", "--source", stuck_database, "--store-block", store_name],
    )
    assert listing.exit_code == 0, listing.output
    assert listing.output.count("incomplete (1 unfinished upload(s)") == 2, listing.output
    assert "last written" in listing.output

    drill_server = save_block(mysql_root)

    def cleanup(dry_run: bool):
        return cleanup_drills(
            drill_server_block=drill_server,
            store_block=store_name,
            stale_after=timedelta(hours=9),
            dry_run=dry_run,
        )

    fresh = [i for i in cleanup(dry_run=False) if i.what == DEBRIS_ITEM]
    assert len(fresh) == 2 and not any(i.drop for i in fresh)
    assert all("may still be running" in i.reason for i in fresh)
    assert len([p for region in regions for p in region.rglob("*.partial")]) == 2

    old = (datetime.now(UTC) - timedelta(hours=10)).timestamp()
    for partial in (p for region in regions for p in region.rglob("*.partial")):
        os.utime(partial, (old, old))
    planned = [i for i in cleanup(dry_run=True) if i.what == DEBRIS_ITEM]
    assert len(planned) == 2 and all(i.drop for i in planned)
    assert len([p for region in regions for p in region.rglob("*.partial")]) == 2, "dry run"
    cleanup(dry_run=False)
    assert not [p for region in regions for p in region.rglob("*.partial")]
    for destination in store.destinations:
        assert scan_backups(open_store(destination), stuck_database) == []


def test_a_tool_dies_with_its_parent_process_whatever_kills_it(tmp_path: Path) -> None:
    """`spawn` arms the parent-death signal: SIGKILL of the parent takes the child along."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1])\n"
            "from tasks.child_process import spawn\n"
            "child = spawn(['sleep', '600'])\n"
            "open(sys.argv[2], 'w').write(str(child.pid))\n"
            "time.sleep(600)\n",
            str(PROJECT_DIR),
            str(pid_file),
        ]
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (pid_file.exists() and pid_file.read_text()):
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(child):
        time.sleep(0.05)
    assert not alive(child)


def test_spawn_refuses_a_new_session() -> None:
    with pytest.raises(ValueError, match="escape group kills"):
        spawn(["true"], start_new_session=True)


def test_local_store_lists_unfinished_uploads_apart_from_objects(tmp_path: Path) -> None:
    store = LocalFolderStore("r", tmp_path)
    writer = store.open_writer("mysql/s/2026/12/02/20261202T000000Z-abcdef/dump.sql.zst")
    writer.write(b"x" * 100_000)  # past the file's write buffer
    assert store.list_objects("mysql/") == []
    [partial] = store.list_partials("mysql/")
    assert partial.key.endswith("dump.sql.zst.partial") and partial.size > 0
    writer.abort()
    assert store.list_partials("mysql/") == []
