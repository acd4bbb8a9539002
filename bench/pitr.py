"""Benchmark: continuous binlog archiving and point-in-time replay (issue #12).

Starts its own private MariaDB (log_bin ON, binlog_format=ROW), seeds the `experiments`
reference database (bench/restore_mysql.py's seed), takes a base backup (backup-mysql), then
runs a writer (inserts and updates at --rate rows/s) for --duration seconds while the real
archive-binlogs flow runs every --interval seconds. In the same run it measures:

  - RPO: the age of the newest restorable point (base + unbroken chain), every --sample s;
  - archive lag: for each archived segment, archived_at - its first commit;
  - replay: the drill's replay stage (fetch + sha256 + chain check + mariadb-binlog | mariadb,
    tasks.pitr_restore.replay_to) against the same segments replayed by hand
    (`mariadb-binlog --start-position=<base GTID> files | mariadb`), each onto a fresh
    throwaway server holding the same base.

Last line:
    RESULT replay_vs_baseline=<x> rpo_max_s=<y> archive_lag_p99_s=<z> events=<n>
Targets: replay_vs_baseline <= 1.1; rpo_max_s <= 90 with the 60 s interval (<= 360 at 5 min).
Usage: uv run python bench/pitr.py [--rows 2000000] [--duration 300] [--interval 60]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(PROJECT_DIR / "bench"))


def writer(conn, database: str, rate: float, stop: threading.Event, counts: list[int]) -> None:  # type: ignore[no-untyped-def]
    """Inserts (70%) and updates (30%) at about `rate` statements per second, autocommit."""
    import pymysql

    db = pymysql.connect(**conn.pymysql_kwargs(database))
    cur = db.cursor()
    cur.execute(
        "CREATE TABLE IF NOT EXISTS writes (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL,"
        " payload VARCHAR(200) NOT NULL)"
    )
    rng = random.Random(1)
    ids: list[int] = []
    pause = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        if ids and rng.random() < 0.3:
            cur.execute("UPDATE writes SET v = v + 1 WHERE id = %s", (rng.choice(ids),))
        else:
            cur.execute("INSERT INTO writes (v, payload) VALUES (0, %s)", ("x" * 150,))
            ids.append(int(cur.lastrowid))
        counts[0] += 1
        next_at += pause
        time.sleep(max(0.0, next_at - time.monotonic()))
    db.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="reference: 2000000")
    parser.add_argument("--duration", type=int, default=300, help="writer seconds (>= 300)")
    parser.add_argument("--interval", type=int, default=60, help="archive-binlogs every N s")
    parser.add_argument("--rate", type=float, default=300.0, help="writer statements/s")
    parser.add_argument("--sample", type=int, default=10, help="RPO sample every N s")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="vibeops-bench-pitr-"))
    os.environ.update(
        {
            "VIBEOPS_HOME": str(workdir / "home"),
            "PREFECT_HOME": str(workdir / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        }
    )
    from tasks.local_stack import PrivateMariaDB

    server = PrivateMariaDB(base_dir=workdir / "mariadb").start()
    os.environ["VIBEOPS_MYSQL_PORT"] = str(server.port)
    try:
        run(args, server.port, workdir)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, port: int, workdir: Path) -> None:
    from restore_mysql import seed  # bench/restore_mysql.py

    from blocks.defaults import local_backup_store, local_mysql_connection
    from flows.archive_binlogs import archive_binlogs
    from flows.backup import backup_mysql
    from tasks.binlog_catalog import list_segments, newest_restorable_point_in_regions
    from tasks.binlog_replay import (
        base_gtid_of,
        check_fetched_chain,
        fetch_segments,
        plan_replay,
        replay_command,
    )
    from tasks.mysql import defaults_file, find_tool
    from tasks.pitr_restore import choose_segments, replay_to, restore_base_on_server
    from tasks.storage import open_store

    conn = local_mysql_connection("vibebench")
    stores = {d.region: open_store(d) for d in local_backup_store().destinations}
    order = list(stores)
    print(f"MariaDB on port {port}; seeding {args.rows:,} rows", flush=True)
    seed(conn, "vibebench", args.rows)
    base = backup_mysql(source="vibebench", database="vibebench")
    print(f"base {base.backup_id} at GTID {base.gtid}", flush=True)

    stop, counts = threading.Event(), [0]
    thread = threading.Thread(target=writer, args=(conn, "vibebench", args.rate, stop, counts))
    thread.start()
    rpo: list[float] = []
    lags: dict[str, float] = {}
    started = time.monotonic()
    next_archive = started + args.interval
    next_sample = started

    def archive() -> None:
        archive_binlogs(
            source="vibebench",
            max_lag=timedelta(seconds=args.interval),
            schedule_interval=timedelta(seconds=args.interval),
        )
        for segment in list_segments(stores[order[0]], "vibebench"):
            if segment.first_event_at and segment.file not in lags:
                lags[segment.file] = (segment.archived_at - segment.first_event_at).total_seconds()

    try:
        while time.monotonic() - started < args.duration:
            now = time.monotonic()
            if now >= next_archive:
                archive()
                next_archive += args.interval
            if now >= next_sample:
                point = newest_restorable_point_in_regions(list(stores.values()), "vibebench")
                age = point.age_seconds(datetime.now(UTC)) if point else float("nan")
                rpo.append(age)
                print(f"t={now - started:5.0f}s writes={counts[0]} rpo={age:.0f}s", flush=True)
                next_sample += args.sample
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=60)
    archive()
    chain = choose_segments(stores, order, base)
    assert chain.gap is None, chain.gap
    print(f"{counts[0]} writes, {len(chain.segments)} segments archived", flush=True)

    # (a) by hand: the same segments and stop, mariadb-binlog | mariadb, onto a throwaway server.
    hand = restore_base_on_server(base, stores, order, "bench-hand", [port])
    try:
        fetched = fetch_segments(stores, order, chain.segments, workdir / "hand")
        check_fetched_chain(base_gtid_of(base.gtid, base.backup_id), fetched)
        plan = plan_replay(base_gtid_of(base.gtid, base.backup_id), fetched)
        reader = find_tool("mariadb-binlog", "mysqlbinlog", package="mariadb-client")
        client = find_tool("mariadb", "mysql", package="mariadb-client")
        with defaults_file(hand.connection) as cnf:
            clock = time.perf_counter()
            source = subprocess.Popen(
                replay_command(reader, plan, base.database), stdout=subprocess.PIPE
            )
            sink = subprocess.run(
                [
                    client,
                    f"--defaults-extra-file={cnf}",
                    "--binary-mode",
                    "--max-allowed-packet=1G",
                ],
                stdin=source.stdout,
                check=True,
            )
            assert source.wait() == 0 and sink.returncode == 0
            baseline = time.perf_counter() - clock
    finally:
        hand.server.remove()
    print(f"replay by hand: {baseline:.2f} s", flush=True)

    # (b) the drill's replay stage, fetch and chain check included.
    drill = restore_base_on_server(base, stores, order, "bench-drill", [port])
    try:
        clock = time.perf_counter()
        outcome = replay_to(base, chain.segments, stores, order, drill.connection)
        replayed = time.perf_counter() - clock
    finally:
        drill.server.remove()
    print(
        f"drill replay: {replayed:.2f} s (fetch {outcome.fetch_s:.2f}, check {outcome.check_s:.2f},"
        f" replay {outcome.result.seconds:.2f}); {outcome.result.transactions} transactions",
        flush=True,
    )
    rpo_max = max((r for r in rpo if r == r), default=float("nan"))
    print(
        f"RESULT replay_vs_baseline={replayed / baseline:.2f} rpo_max_s={rpo_max:.0f} "
        f"archive_lag_p99_s={percentile(list(lags.values()), 0.99):.0f} "
        f"events={outcome.result.transactions}"
    )


if __name__ == "__main__":
    main()
