"""A private MariaDB with binary logging, a writer that logs its own commits, and an archiver
(the real archive-binlogs flow)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pymysql

from blocks import MySQLConnection
from flows.archive_binlogs import archive_binlogs
from tasks.binlog_catalog import list_segments
from tasks.binlog_manifest import SegmentManifest
from tasks.local_stack import PrivateMariaDB
from tasks.storage import ObjectStore


@dataclass
class Commit:
    """One statement the writer sent, with the times around its autocommit."""

    op: str  # "insert" | "update"
    row: int
    sent: float
    acked: float


@dataclass
class Writer:
    """Inserts and updates rows of `<db>.w` until stopped; logs each commit with its times."""

    conn: MySQLConnection
    database: str
    rate_per_s: float = 200.0
    log: list[Commit] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            db = pymysql.connect(**self.conn.pymysql_kwargs(self.database))
            cur = db.cursor()
            rng = random.Random(7)
            rows: list[int] = []
            pause = 1.0 / self.rate_per_s
            while not self._stop.is_set():
                sent = time.time()
                if rows and rng.random() < 0.3:
                    row = rng.choice(rows)
                    cur.execute("UPDATE w SET v = v + 1 WHERE id = %s", (row,))
                    op = "update"
                else:
                    cur.execute("INSERT INTO w (v, note) VALUES (0, %s)", (f"n{len(rows)}",))
                    row = int(cur.lastrowid)
                    rows.append(row)
                    op = "insert"
                self.log.append(Commit(op, row, sent, time.time()))
                time.sleep(pause)
            db.close()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error


def expected_state(log: list[Commit], cutoff: float) -> tuple[dict[int, tuple[int, int]], set[int]]:
    """Rows that must exist at `cutoff` with (min, max) of v, and rows in flight at `cutoff`.

    A statement acknowledged before `cutoff` is in; one sent at or after it is out; one in
    flight (sent before, acknowledged after) may be either.
    """
    must: dict[int, tuple[int, int]] = {}
    maybe: set[int] = set()
    for c in log:
        if c.op == "insert":
            if c.acked < cutoff:
                must[c.row] = (0, 0)
            elif c.sent < cutoff:
                maybe.add(c.row)
    for c in log:
        if c.op == "update" and c.row in must and c.sent < cutoff:
            low, high = must[c.row]
            must[c.row] = (low + (1 if c.acked < cutoff else 0), high + 1)
    return must, maybe


def create_writer_table(conn: MySQLConnection, database: str) -> None:
    db = pymysql.connect(**conn.pymysql_kwargs())
    with db.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
        cur.execute(
            f"CREATE TABLE `{database}`.w (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL,"
            " note VARCHAR(40) NOT NULL, at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))"
        )
        cur.executemany(
            f"INSERT INTO `{database}`.w (v, note) VALUES (0, %s)",
            [(f"seed{i}",) for i in range(50)],
        )
    db.close()


@dataclass
class Archiver:
    """Runs the real archive-binlogs flow, flushing whatever the active binlog holds."""

    connection_block: str
    store_block: str
    stores: list[ObjectStore]
    source: str

    def run(self) -> None:
        archive_binlogs(
            source=self.source,
            connection_block=self.connection_block,
            store_block=self.store_block,
            max_lag=timedelta(seconds=1),
            schedule_interval=timedelta(seconds=1),
        )

    @property
    def archived(self) -> dict[str, SegmentManifest]:
        return {s.file: s for s in list_segments(self.stores[0], self.source)}


def start_binlog_server(base_dir: Path) -> tuple[PrivateMariaDB, MySQLConnection]:
    """A private server with log_bin ON, binlog_format=ROW (PrivateMariaDB's defaults)."""
    server = PrivateMariaDB(base_dir=base_dir).start()
    conn = MySQLConnection(host="127.0.0.1", port=server.port, user="root", database="")
    return server, conn
