"""Benchmark: the restore drill's restore phase against `zstd -dc dump | mysql scratch`.

Starts its own private MariaDB (tasks.local_stack.PrivateMariaDB) in a temporary folder,
seeds an `experiments`-shaped database (id, ai_model, task_id, created_at, score, ~500-byte
payload) with N rows, backs it up with the project's backup-mysql flow into two local
regions, then measures in one run, on the same server and the same dump object:

  (a) baseline: `zstd -dc <object> | mariadb <scratch>`
  (b) the drill's restore phase (download + sha256 + decompress + load, tasks.restore) into a
      scratch database, single stream (1 connection) and parallel (--connections)
  (c) the whole restore-drill flow (find, restore, parity + CHECKSUM TABLE + expectations)
  (d) the drill's restore phase of the other backup engines, from their own backups of the
      same database: `mydumper` (download + sha256 + decompress + untar + `myloader -t k`)
      and `physical` (download + sha256 + decompress + `mbstream -x` + `--prepare` + a
      throwaway server answering on the prepared datadir), and their whole drills

(a), (b) and (d) run in interleaved rounds (--rounds, medians), each after InnoDB has flushed
the previous step's dirty pages; then prints, last:

    RESULT restore_vs_baseline=<b_parallel/a> restore_vs_baseline_mydumper=<d_mydumper/a> restore_vs_baseline_physical=<d_physical/a> rows=<N>

Targets: single stream <= 1.1, parallel <= 0.7, mydumper <= 0.5, physical <= 0.25 (2 cores).
Usage: uv run python bench/restore_mysql.py [--rows 2000000] [--connections 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))


def seed(conn, database: str, rows: int, batch: int = 100_000) -> None:  # type: ignore[no-untyped-def]
    """Schema and reference rows from tasks.sample_data; experiments generated server-side."""
    from tasks.mysql import connect
    from tasks.sample_data import AI_MODELS, create_database, seed_reference_rows

    create_database(conn, database, drop_first=True)
    seed_reference_rows(conn, database)
    models = ", ".join(f"'{m}'" for m in AI_MODELS)
    with connect(conn, database) as connection, connection.cursor() as cur:
        for start in range(1, rows + 1, batch):
            end = min(rows, start + batch - 1)
            # ~500 bytes of mostly hex payload: compresses about as well as real JSON.
            cur.execute(
                "INSERT INTO experiments (id, ai_model, task_id, created_at, score, payload)"
                f" SELECT seq, ELT(1 + seq % {len(AI_MODELS)}, {models}), seq % 500,"
                " TIMESTAMP('2025-01-01') + INTERVAL seq SECOND,"
                " IF(seq % 97 = 0, NULL, ROUND(RAND(seq) * 100, 3)),"
                ' CONCAT(\'{"run":\', seq, \',"prompt":"task \', seq % 500, \' \u2014 \u00fcn\u00efc\u00f8d\u00e9","pad":"\','
                " MD5(seq), SHA2(seq, 512), SHA2(seq * 7, 512), SHA2(seq * 13, 512),"
                " SHA2(seq * 17, 256), '\"}')"
                f" FROM seq_{start}_to_{end}"
            )


SERVER_PID: list[int] = []
CPU_SECONDS: dict[str, list[float]] = {}


def cpu_seconds() -> float:
    """CPU used so far by the MariaDB server, this process and its finished children."""
    fields = Path(f"/proc/{SERVER_PID[0]}/stat").read_text().rsplit(")", 1)[1].split()
    server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return server + own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(label: str, fn, kind: str | None = None):  # type: ignore[no-untyped-def]
    """Run fn; print wall and CPU seconds (CPU is steady when other work shares the cores)."""
    cpu = cpu_seconds() if SERVER_PID else 0.0
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu if SERVER_PID else 0.0
    if kind:
        CPU_SECONDS.setdefault(kind, []).append(cpu)
    print(f"{label}: {seconds:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--connections", type=int, default=2, help="parallel load connections")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="vibeops-bench-restore-"))
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
    assert server.process is not None
    SERVER_PID.append(server.process.pid)
    try:
        run(args, server.port)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, port: int) -> None:
    from blocks.defaults import local_backup_store, local_mysql_connection
    from flows.backup import backup_mysql
    from flows.restore_drill import restore_drill
    from tasks.drill import DrillMarker
    from tasks.mydumper import restore_mydumper
    from tasks.mysql import defaults_file, table_row_counts
    from tasks.physical import create_scratch_server, restore_physical
    from tasks.restore import create_scratch_database, drop_scratch_database, restore_logical_dump
    from tasks.storage import open_store

    conn = local_mysql_connection("vibebench")
    print(f"MariaDB on port {port}; seeding {args.rows:,} rows", flush=True)
    timed("seed", lambda: seed(conn, "vibebench", args.rows))
    manifest = backup_mysql(source="vibebench", database="vibebench")
    store = open_store(local_backup_store().destinations[0])
    obj = manifest.objects[0]
    path = Path(store.root) / manifest.object_key(obj.name)  # type: ignore[attr-defined]
    print(
        f"backup {manifest.backup_id}: {obj.size / 1e6:.1f} MB {manifest.codec} from "
        f"{(obj.uncompressed_size or 0) / 1e6:.1f} MB of SQL",
        flush=True,
    )

    # A physical backup carries the redo written since the last checkpoint; right after the
    # bulk seed that is most of the seed, unlike a nightly backup of a steady server.
    quiesce(conn)
    engines = {
        engine: backup_mysql(
            source="vibebench", database="vibebench", engine=engine, threads=args.connections
        )
        for engine in ("mydumper", "physical")
    }
    for engine, other in engines.items():
        print(
            f"{engine} backup {other.backup_id}: {other.total_size / 1e6:.1f} MB {other.codec} "
            f"from {(other.objects[0].uncompressed_size or 0) / 1e6:.1f} MB",
            flush=True,
        )

    def baseline() -> None:
        with defaults_file(conn) as cnf:
            subprocess.run(
                ["mariadb", f"--defaults-extra-file={cnf}", "-e", "CREATE DATABASE bench_baseline"],
                check=True,
            )
            pipeline = f"zstd -dc {path} | mariadb --defaults-extra-file={cnf} bench_baseline"
            subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], check=True)

    def measure_baseline(label: str) -> float:
        quiesce(conn)
        seconds, _ = timed(f"(a) baseline zstd -dc | mariadb {label}", baseline, "baseline")
        assert table_row_counts(conn, "bench_baseline", ["experiments"])["experiments"] == args.rows
        drop(conn, "bench_baseline")
        return seconds

    def drill_restore(connections: int) -> float:
        name = f"drill_bench_{connections}"
        marker = DrillMarker("bench", "vibebench", manifest.backup_id, datetime.now(UTC))
        create_scratch_database(conn, name, marker, ["vibebench"])
        quiesce(conn)
        try:
            seconds, stats = timed(
                f"(b) drill restore phase, {connections} connection(s)",
                lambda: restore_logical_dump(manifest, store, conn, name, connections),
                f"drill-{connections}",
            )
            print(
                f"    download {stats.download_s:.2f} s, decompress+route {stats.decompress_s:.2f} s,"
                f" waiting for the load {stats.load_s:.2f} s, binlog skipped: {stats.binlog_skipped}",
                flush=True,
            )
            rows = table_row_counts(conn, name, ["experiments"])["experiments"]
            assert rows == args.rows, rows
        finally:
            drop_scratch_database(conn, name, owned=True)
        return seconds

    def mydumper_restore() -> float:
        other = engines["mydumper"]
        name = "drill_bench_mydumper"
        marker = DrillMarker("bench", "vibebench", other.backup_id, datetime.now(UTC))
        create_scratch_database(conn, name, marker, ["vibebench"])
        quiesce(conn)
        try:
            seconds, stats = timed(
                f"(d) drill restore phase, mydumper + myloader -t {args.connections}",
                lambda: restore_mydumper(other, store, conn, name, args.connections),
                "mydumper",
            )
            print(
                f"    download {stats.download_s:.2f} s, decompress+untar {stats.decompress_s:.2f}"
                f" s, myloader {stats.load_s:.2f} s",
                flush=True,
            )
            assert table_row_counts(conn, name, ["experiments"])["experiments"] == args.rows
        finally:
            drop_scratch_database(conn, name, owned=True)
        return seconds

    def physical_restore() -> float:
        other = engines["physical"]
        scratch = create_scratch_server("drill_bench_physical", [port])
        quiesce(conn)
        try:
            target = scratch.connection("vibebench")
            seconds, stats = timed(
                "(d) drill restore phase, physical (extract + prepare + throwaway server)",
                lambda: restore_physical(other, store, target, "vibebench", scratch_server=scratch),
                "physical",
            )
            print(
                f"    download {stats.download_s:.2f} s, decompress {stats.decompress_s:.2f} s,"
                f" extract + prepare + start {stats.load_s:.2f} s",
                flush=True,
            )
            rows = table_row_counts(target, "vibebench", ["experiments"])["experiments"]
            assert rows == args.rows, rows
        finally:
            scratch.remove()
        return seconds

    # Interleaved rounds, medians: other work on the machine shifts single runs by +-30 %.
    baselines, singles, parallels, mydumpers, physicals = [], [], [], [], []
    for round_no in range(1, args.rounds + 1):
        baselines.append(measure_baseline(f"(round {round_no})"))
        singles.append(drill_restore(1))
        if args.connections > 1:
            parallels.append(drill_restore(args.connections))
        mydumpers.append(mydumper_restore())
        physicals.append(physical_restore())
    a = statistics.median(baselines)
    single = statistics.median(singles)
    parallel = statistics.median(parallels) if parallels else single
    mydumper, physical = statistics.median(mydumpers), statistics.median(physicals)
    rto: dict[str, float] = {}
    for engine, backup_id in (
        ("mysqldump", manifest.backup_id),
        *((e, m.backup_id) for e, m in engines.items()),
    ):
        quiesce(conn)
        record = restore_drill(
            source="vibebench", backup=backup_id, load_connections=args.connections
        )
        assert record.rto_seconds is not None
        rto[engine] = record.rto_seconds
        print(
            f"(c) whole drill, {engine}: RTO {record.rto_seconds:.2f} s "
            + ", ".join(f"{k} {v:.2f}" for k, v in record.phases.items()),
            flush=True,
        )
    print(
        f"medians of {args.rounds} round(s): baseline {a:.2f} s, single stream {single:.2f} s "
        f"({single / a:.2f}x), {args.connections} connections {parallel:.2f} s ({parallel / a:.2f}x)"
    )
    cpu = {kind: statistics.median(values) for kind, values in CPU_SECONDS.items()}
    print(
        "median CPU seconds (server + clients + this process): "
        + ", ".join(f"{kind} {value:.2f}" for kind, value in cpu.items())
        + f"; single stream uses {cpu['drill-1'] / cpu['baseline']:.2f}x the baseline's CPU"
    )
    print(
        f"engines vs baseline: mydumper {mydumper:.2f} s ({mydumper / a:.2f}x, target <= 0.5), "
        f"physical {physical:.2f} s ({physical / a:.2f}x, target <= 0.25); whole-drill RTO "
        + ", ".join(f"{engine} {seconds:.1f} s" for engine, seconds in rto.items())
    )
    print(
        f"mysqldump engine: rto_s={rto['mysqldump']:.1f} single_stream={single / a:.2f} "
        f"connections={args.connections}"
    )
    print(
        f"RESULT restore_vs_baseline={parallel / a:.2f} "
        f"restore_vs_baseline_mydumper={mydumper / a:.2f} "
        f"restore_vs_baseline_physical={physical / a:.2f} rows={args.rows}"
    )


def quiesce(conn, timeout_s: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Let InnoDB flush the previous step's dirty pages so each measurement starts equal."""
    from tasks.mysql import connect

    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
        previous = cur.fetchone()[0]
        cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
                if int(cur.fetchone()[1]) < 100:
                    break
                time.sleep(0.5)
        finally:
            cur.execute(f"SET GLOBAL innodb_max_dirty_pages_pct = {float(previous)}")


def drop(conn, database: str) -> None:  # type: ignore[no-untyped-def]
    from tasks.mysql import connect

    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")


if __name__ == "__main__":
    main()
