"""Exact backups without stalled writers: the facts are proven by the server's coordinates.

Real servers only: the session's private MariaDB (log_bin ON, ROW) and a second private one
with log_bin OFF (like the shared server on 3306). A writer commits all the time and a
stranger keeps opening connections that run queries, as on a busy server.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import zstandard

from blocks import MySQLConnection
from flows.backup import backup_mysql
from tasks.local_stack import PrivateMariaDB
from tasks.mydumper import MydumperDump, parse_metadata
from tasks.mysql import (
    BinlogCoordinates,
    ConsistentDump,
    DumpStream,
    read_source_facts,
    table_checksums,
    table_row_counts,
)
from tasks.storage import open_store
from tests.fixtures.mysql import run_sql
from tests.helpers import load_sql, local_store, save_block

pytestmark = pytest.mark.mysql

TABLES = ["ledger", "quiet"]
_CHANGE_MASTER = re.compile(
    rb"-- CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+);"
)
_GTID = re.compile(rb"\n-- SET GLOBAL gtid_slave_pos='([^']*)';")


# -- servers, data and the busy neighbours ------------------------------------------------------


@pytest.fixture(scope="module")
def no_binlog_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MySQLConnection]:
    """root on a private MariaDB started with log_bin OFF."""
    server = PrivateMariaDB(
        base_dir=Path(tmp_path_factory.mktemp("nobinlog")), binary_log=False
    ).start()
    yield MySQLConnection(host="127.0.0.1", port=server.port, user="root", database="")
    server.stop()


def make_database(root: MySQLConnection) -> str:
    name = f"snap_{uuid.uuid4().hex[:8]}"
    run_sql(root, f"CREATE DATABASE `{name}`")
    run_sql(
        root,
        "CREATE TABLE ledger (id INT AUTO_INCREMENT PRIMARY KEY, amount INT NOT NULL,"
        " note VARCHAR(64)) ENGINE=InnoDB",
        name,
    )
    run_sql(root, "CREATE TABLE quiet (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB", name)
    conn = pymysql.connect(**root.pymysql_kwargs(name))
    with conn.cursor() as cur:
        for start in range(0, 20_000, 2_000):
            cur.executemany(
                "INSERT INTO ledger (amount, note) VALUES (%s, %s)",
                [(i, f"row {i}") for i in range(start, start + 2_000)],
            )
        cur.executemany("INSERT INTO quiet VALUES (%s, %s)", [(i, "x" * 100) for i in range(500)])
    conn.close()
    return name


class Writer(threading.Thread):
    """Commits one row at a time (autocommit) until stopped; records the longest commit."""

    def __init__(self, root: MySQLConnection, database: str) -> None:
        super().__init__(daemon=True)
        self.conn = pymysql.connect(**root.pymysql_kwargs(database))
        self.stop = threading.Event()
        self.commits = 0
        self.longest_ms = 0.0

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while not self.stop.is_set():
                started = time.perf_counter()
                cur.execute(
                    "INSERT INTO ledger (amount, note) VALUES (%s, 'writer')", (self.commits,)
                )
                cur.execute("UPDATE ledger SET amount = amount + 1 WHERE id = 1")
                self.longest_ms = max(self.longest_ms, 1000 * (time.perf_counter() - started))
                self.commits += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=30)
        self.conn.close()


class Stranger(threading.Thread):
    """Keeps opening new connections that run a query: the old processlist watch took them
    for the dump's connection."""

    def __init__(self, root: MySQLConnection) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.connections = 0

    def run(self) -> None:
        while not self.stop.is_set():
            conn = pymysql.connect(**self.root.pymysql_kwargs())
            with conn.cursor() as cur:
                cur.execute("SELECT SLEEP(0.05), COUNT(*) FROM information_schema.schemata")
            conn.close()
            self.connections += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=30)


def restored_facts(root: MySQLConnection, dump: bytes) -> tuple[dict, dict]:
    """Row counts and checksums of the dump, loaded into a scratch database."""
    scratch = f"chk_{uuid.uuid4().hex[:8]}"
    run_sql(root, f"CREATE DATABASE `{scratch}`")
    try:
        load_sql(root, scratch, dump)
        return table_row_counts(root, scratch, TABLES), table_checksums(root, scratch, TABLES)
    finally:
        run_sql(root, f"DROP DATABASE `{scratch}`")


def dump_directly(conn: MySQLConnection, database: str) -> tuple[ConsistentDump, bytes]:
    """ConsistentDump as stream_dump uses it, the output collected in memory."""
    with ConsistentDump(conn, database) as dump:
        dump.record_table_facts(TABLES)
        stream = dump.output()
        chunks = []
        while chunk := stream.read(1 << 20):
            chunks.append(chunk)
        assert dump.process is not None and dump.process.wait(timeout=300) == 0
        dump.confirm()
    return dump, b"".join(chunks)


# -- log_bin ON: proof by coordinates -----------------------------------------------------------


def test_backup_is_exact_under_a_writer_and_a_stranger_and_records_the_dumps_coordinates(
    mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    """The old code released its lock for a stranger's query and then called inexact facts
    exact (or gave up after 10 s with exact_snapshot 0); its GTID was read after the fact."""
    database = make_database(mysql_root)
    writer, stranger = Writer(mysql_root, database), Stranger(mysql_root)
    writer.start()
    stranger.start()
    time.sleep(0.5)
    store = local_store(tmp_path)
    try:
        manifest = backup_mysql(
            source=database,
            database=database,
            connection_block=save_block(mysql_root),
            store_block=save_block(store),
        )
    finally:
        writer.finish()
        stranger.finish()
    assert writer.commits > 0 and stranger.connections > 0

    hints = manifest.restore_hints
    assert hints["exact_snapshot"] == 1, hints
    assert hints["exact_by"] == "binlog-coordinates"
    assert "inexact_reason" not in hints
    raw = (
        zstandard.ZstdDecompressor()
        .decompressobj()
        .decompress(
            open_store(store.destinations[0]).read_bytes(
                manifest.object_key(manifest.objects[0].name)
            )
        )
    )
    position = _CHANGE_MASTER.search(raw)
    gtid = _GTID.search(raw)
    assert position is not None and gtid is not None
    assert manifest.binlog_file == position.group(1).decode()
    assert manifest.binlog_position == int(position.group(2))
    assert manifest.gtid == gtid.group(1).decode() and manifest.gtid

    rows, checksums = restored_facts(mysql_root, raw)
    assert {t: f.rows for t, f in manifest.tables.items()} == rows
    assert {t: f.checksum for t, f in manifest.tables.items()} == checksums
    run_sql(mysql_root, f"DROP DATABASE `{database}`")


def test_mydumper_facts_are_proven_by_its_metadata_coordinates(
    mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    database = make_database(mysql_root)
    writer = Writer(mysql_root, database)
    writer.start()
    try:
        with MydumperDump(mysql_root, database, tmp_path / "out", threads=2, rows=5000) as dump:
            dump.record_table_facts(TABLES)
            dump.wait(600)
            facts = dump.facts
            recorded = parse_metadata((tmp_path / "out" / "metadata").read_text())
    finally:
        writer.finish()
    assert facts is not None and recorded is not None
    assert facts.exact and facts.exact_by == "binlog-coordinates", facts.inexact_reason
    assert (facts.binlog_file, facts.binlog_position) == (recorded.file, recorded.position)
    assert facts.gtid == recorded.gtid
    run_sql(mysql_root, f"DROP DATABASE `{database}`")


# -- log_bin OFF: a bounded lock, or inexact with the reason ------------------------------------


def test_without_binlog_a_lock_of_at_most_a_second_proves_the_snapshot(
    no_binlog_root: MySQLConnection,
) -> None:
    database = make_database(no_binlog_root)
    writer, stranger = Writer(no_binlog_root, database), Stranger(no_binlog_root)
    writer.start()
    stranger.start()
    time.sleep(0.3)
    try:
        dump, data = dump_directly(no_binlog_root, database)
    finally:
        writer.finish()
        stranger.finish()
    facts = dump.facts
    assert facts is not None
    assert facts.exact and facts.exact_by == "global-lock", facts.inexact_reason
    assert facts.binlog_file is None and facts.gtid is None
    rows, checksums = restored_facts(no_binlog_root, data)
    assert facts.rows == rows and facts.checksums == checksums


def test_without_binlog_or_reload_the_facts_are_marked_inexact_with_the_reason(
    no_binlog_root: MySQLConnection,
) -> None:
    database = make_database(no_binlog_root)
    user, secret = f"nr{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    run_sql(no_binlog_root, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'")
    run_sql(
        no_binlog_root,
        f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON `{database}`.* TO '{user}'@'%'",
    )
    limited = MySQLConnection(
        host=no_binlog_root.host, port=no_binlog_root.port, user=user, password=secret
    )
    dump, data = dump_directly(limited, database)
    facts = dump.facts
    assert facts is not None and not facts.exact
    assert facts.exact_by == "none" and facts.attempts == 3
    assert facts.inexact_reason is not None
    assert "log_bin is OFF" in facts.inexact_reason and "RELOAD" in facts.inexact_reason
    assert facts.proof_hints()["exact_snapshot"] == 0
    assert b"INSERT INTO `ledger`" in data


def test_preflight_says_log_bin_is_off_what_it_costs_and_how_to_turn_it_on(
    no_binlog_root: MySQLConnection, mysql_root: MySQLConnection
) -> None:
    off = read_source_facts(no_binlog_root, "mysql").binlog_warning
    assert off is not None
    for needed in ("log_bin is OFF", "point-in-time recovery", "log_bin=", "binlog_format=ROW"):
        assert needed in off
    assert read_source_facts(mysql_root, "mysql").binlog_warning is None


# -- the stream parser (no server) --------------------------------------------------------------


class _Pipe:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def read(self, size: int = -1) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def fileno(self) -> int:
        raise OSError("not a pipe")


@pytest.mark.parametrize("cut", [1, 10, 25, 33, 40])
def test_dump_stream_finds_the_gtid_comment_wherever_the_chunks_split_it(cut: int) -> None:
    tail = b"UNLOCK TABLES;\n\n-- SET GLOBAL gtid_slave_pos='0-1-412,1-2-7';\n-- Dump completed\n"
    body = b"INSERT INTO `t` VALUES (1,'-- SET GLOBAL gtid_slave_pos=\\'9-9-9\\'');\n" + tail
    split = body.index(b"-- SET GLOBAL gtid_slave_pos='0") + cut - 20
    header = b"-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000042', MASTER_LOG_POS=1234;\n"
    stream = DumpStream(header, _Pipe([body[:split], body[split:]]), scan=True)  # type: ignore[arg-type]
    data = b""
    while chunk := stream.read(1 << 20):
        data += chunk
    assert data == header + body
    assert stream.gtid == "0-1-412,1-2-7"
    assert stream.position == BinlogCoordinates("binlog.000042", 1234)


def test_mydumper_metadata_is_parsed() -> None:
    text = (
        "Started dump at: 2026-12-02 13:43:30\nSHOW MASTER STATUS:\n\tLog: binlog.000007\n"
        "\tPos: 871\n\tGTID:0-1-3\n\nFinished dump at: 2026-12-02 13:43:30\n"
    )
    assert parse_metadata(text) == BinlogCoordinates("binlog.000007", 871, "0-1-3")
    assert parse_metadata("Started dump at: x\nFinished dump at: y\n") is None
