"""Benchmark: writer latency during a retention purge, single DELETE versus the chunked purge.

Starts its own private MariaDB (tasks.local_stack.PrivateMariaDB) in a temporary folder and
stops it at the end. For each method, on a freshly built `experiments` table of N rows (created_at
spread over 60 days, so half are older than the 30-day cutoff):

- a writer process inserts rows into the same table at a steady rate, timing every insert;
- the purge runs: (a) one `DELETE FROM experiments WHERE created_at < cutoff`, or (b) the
  flow's chunked purge (`tasks.mysql_purge.purge_expired_rows`, the RetentionPolicy block's
  default chunk size and pause, the plan's key range from `count_expired_rows`);
- the inserts that started while the purge ran give the writer's p50/p99/max.

The last line is:

    RESULT writer_p99_ms_chunked=<x> writer_p99_ms_single=<y> purge_rows_per_s=<z>

(purge_rows_per_s is the chunked purge's rows deleted / its wall time, pauses included.)
Targets: writer p99 during the chunked purge <= 50 ms; >= 20,000 rows/s.

Usage: uv run python bench/purge.py [--rows 2000000] [--writer-rate 200]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from blocks import MySQLConnection, RetentionPolicy  # noqa: E402
from tasks.local_stack import PrivateMariaDB  # noqa: E402
from tasks.mysql_purge import (  # noqa: E402
    check_table_rules,
    count_expired_rows,
    purge_expired_rows,
)

DATABASE = "vibebench"
TABLE = "experiments"
FILL_BATCH = 200_000
TARGET_P99_MS = 50.0
TARGET_ROWS_PER_S = 20_000.0


def build_table(conn: MySQLConnection, rows: int, now: datetime) -> None:
    """A fresh table: `rows` rows one after another over the 60 days before `now`."""
    start = (now - timedelta(days=60)).replace(tzinfo=None)
    step_us = int(timedelta(days=60).total_seconds() * 1e6 / rows)
    with pymysql.connect(**conn.pymysql_kwargs()) as db, db.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        cur.execute(f"USE {DATABASE}")
        cur.execute(f"DROP TABLE IF EXISTS {DATABASE}.{TABLE}")
        cur.execute(
            f"CREATE TABLE {DATABASE}.{TABLE} (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
            "created_at DATETIME(6) NOT NULL, tenant INT NOT NULL, payload VARCHAR(600) NOT NULL) "
            "ENGINE=InnoDB"
        )
        for first in range(1, rows + 1, FILL_BATCH):
            last = min(rows, first + FILL_BATCH - 1)
            cur.execute(
                f"INSERT INTO {DATABASE}.{TABLE} (created_at, tenant, payload) "
                f"SELECT TIMESTAMP'{start:%Y-%m-%d %H:%M:%S}' + INTERVAL (seq * {step_us}) "
                "MICROSECOND, seq % 97, RPAD(CONCAT(MD5(seq), SHA2(seq, 256)), 500, MD5(seq + 1)) "
                f"FROM seq_{first}_to_{last}"
            )


def writer(kwargs: dict[str, Any], rate: float, ready: Any, stop: Any, out: Any) -> None:
    """Insert one row at a time at `rate` per second until `stop`; send (start, seconds, ok)."""
    samples: list[tuple[float, float, bool]] = []
    db = pymysql.connect(**kwargs)
    cur = db.cursor()
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        began_wall = time.time()
        began = time.monotonic()
        ok = True
        try:
            cur.execute(
                f"INSERT INTO {DATABASE}.{TABLE} (created_at, tenant, payload) "
                "VALUES (UTC_TIMESTAMP(6), 1, REPEAT('w', 500))"
            )
        except pymysql.err.MySQLError:
            ok = False
        samples.append((began_wall, time.monotonic() - began, ok))
        if len(samples) == 50:
            ready.set()
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    db.close()
    out.send(samples)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_one(conn: MySQLConnection, method: str, rows: int, rate: float) -> dict[str, float]:
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=30)
    t0 = time.monotonic()
    build_table(conn, rows, now)
    print(f"[{method}] built {rows:,} rows in {time.monotonic() - t0:.1f}s", flush=True)
    policy = RetentionPolicy()
    shape = check_table_rules(conn, [("bench", DATABASE, TABLE, "created_at")])["bench"]
    facts = count_expired_rows.fn(conn, shape, cutoff)

    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=writer, args=(conn.pymysql_kwargs(), rate, ready, stop, send))
    proc.start()
    if not ready.wait(timeout=120):  # the writer is warm before the purge starts
        proc.kill()
        raise SystemExit("the writer process did not start inserting within 120 s")
    started_wall = time.time()
    started = time.monotonic()
    if method == "single":
        with pymysql.connect(**conn.pymysql_kwargs()) as db, db.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            deleted = cur.execute(
                f"DELETE FROM {DATABASE}.{TABLE} WHERE created_at < %s",
                (cutoff.replace(tzinfo=None),),
            )
    else:
        result = purge_expired_rows.fn(
            conn,
            shape,
            cutoff,
            from_pk=facts.min_pk,
            upto_pk=facts.max_pk,
            chunk_rows=policy.chunk_rows,
            pause_seconds=policy.pause_ms / 1000,
        )
        deleted = result.deleted
    seconds = time.monotonic() - started
    ended_wall = time.time()
    time.sleep(0.5)
    stop.set()
    samples = receive.recv()
    proc.join(timeout=30)
    during = [s for s in samples if started_wall <= s[0] <= ended_wall]
    latencies = [s[1] * 1000 for s in during]
    errors = sum(1 for s in during if not s[2])
    stats = {
        "deleted": float(deleted),
        "expected": float(facts.matching_rows),
        "seconds": seconds,
        "rows_per_s": deleted / seconds if seconds else 0.0,
        "inserts": float(len(during)),
        "errors": float(errors),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies, default=0.0),
    }
    print(
        f"[{method}] deleted {deleted:,} of {facts.matching_rows:,} expired rows in {seconds:.1f}s "
        f"({stats['rows_per_s']:,.0f} rows/s); writer during purge: {len(during)} inserts, "
        f"{errors} errors, p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, "
        f"max {stats['max_ms']:.1f} ms",
        flush=True,
    )
    if deleted != facts.matching_rows:
        raise SystemExit(f"[{method}] deleted {deleted} rows, expected {facts.matching_rows}")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows per fresh table")
    parser.add_argument("--writer-rate", type=float, default=200.0, help="writer inserts/s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vibeops-bench-purge-") as tmp:
        server = PrivateMariaDB(base_dir=Path(tmp)).start()
        try:
            conn = MySQLConnection(host="127.0.0.1", port=server.port, user="root", database="")
            single = run_one(conn, "single", args.rows, args.writer_rate)
            chunked = run_one(conn, "chunked", args.rows, args.writer_rate)
        finally:
            server.stop()
    ok_p99 = chunked["p99_ms"] <= TARGET_P99_MS
    ok_rate = chunked["rows_per_s"] >= TARGET_ROWS_PER_S
    print(
        f"targets: chunked writer p99 <= {TARGET_P99_MS:.0f} ms: {'met' if ok_p99 else 'MISSED'}; "
        f">= {TARGET_ROWS_PER_S:,.0f} rows/s: {'met' if ok_rate else 'MISSED'}; single-DELETE "
        f"writer p99 is {single['p99_ms'] / max(chunked['p99_ms'], 0.001):.0f}x the chunked one",
        flush=True,
    )
    print(
        f"RESULT writer_p99_ms_chunked={chunked['p99_ms']:.1f} "
        f"writer_p99_ms_single={single['p99_ms']:.1f} "
        f"purge_rows_per_s={chunked['rows_per_s']:.0f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
