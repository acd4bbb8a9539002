"""A private MariaDB with binary logging, a writer that logs its own commits, and an archiver.

The archiver here copies closed binlog files straight from the server's folder into segment
objects (the PITR contract's layout), so replay tests do not depend on archive-binlogs.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pymysql
import zstandard

from blocks import MySQLConnection
from tasks.binlog_events import format_gtid_list, read_binlog_summary
from tasks.binlog_manifest import (
    SegmentManifest,
    binlog_index,
    segment_manifest_key,
    segment_prefix,
    sequence_name,
)
from tasks.local_stack import PrivateMariaDB
from tasks.manifest import RegionCopy, StoredObject
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
    """Copies every closed binlog file of a private server into segment objects."""

    server: PrivateMariaDB
    conn: MySQLConnection
    stores: list[ObjectStore]
    source: str
    sequence: str | None = None
    archived: dict[str, SegmentManifest] = field(default_factory=dict)

    def run(self, flush: bool = True) -> list[SegmentManifest]:
        db = pymysql.connect(**self.conn.pymysql_kwargs())
        with db.cursor() as cur:
            if flush:
                cur.execute("FLUSH BINARY LOGS")
            cur.execute("SHOW BINARY LOGS")
            files = [str(row[0]) for row in cur.fetchall()][:-1]  # all but the open one
        db.close()
        new = []
        for name in files:
            if name in self.archived:
                continue
            raw = (self.server.base_dir / name).read_bytes()
            with open(self.server.base_dir / name, "rb") as handle:
                summary = read_binlog_summary(handle)
            assert summary.created_at is not None
            if self.sequence is None:
                self.sequence = sequence_name(summary.server_id, summary.created_at)
            prefix = segment_prefix(self.source, self.sequence)
            packed = zstandard.ZstdCompressor(level=3).compress(raw)
            import hashlib

            segment = SegmentManifest(
                source=self.source,
                sequence=self.sequence,
                server_id=summary.server_id,
                file=name,
                index=binlog_index(name),
                end_position=len(raw),
                raw_size=len(raw),
                raw_sha256=hashlib.sha256(raw).hexdigest(),
                object=StoredObject(
                    name=f"{name}.zst",
                    size=len(packed),
                    sha256=hashlib.sha256(packed).hexdigest(),
                    uncompressed_size=len(raw),
                ),
                gtid_list_start=format_gtid_list(summary.gtid_list_start),
                gtid_last=format_gtid_list(summary.gtid_last),
                transactions=summary.transactions,
                first_event_at=summary.first_event_at,
                last_event_at=summary.last_event_at,
                file_created_at=summary.created_at,
                archived_at=datetime.now(UTC),
                regions=[RegionCopy(region=s.region, uri=s.uri(prefix)) for s in self.stores],
                prefix=prefix,
            )
            for store in self.stores:
                store.write_bytes(segment.object_key, packed)
                store.write_bytes(segment_manifest_key(prefix, name), segment.to_json())
            self.archived[name] = segment
            new.append(segment)
        return new


def start_binlog_server(base_dir: Path) -> tuple[PrivateMariaDB, MySQLConnection]:
    """A private server with log_bin ON, binlog_format=ROW (PrivateMariaDB's defaults)."""
    server = PrivateMariaDB(base_dir=base_dir).start()
    conn = MySQLConnection(host="127.0.0.1", port=server.port, user="root", database="")
    return server, conn
