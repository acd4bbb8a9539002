"""Benchmark: backup-mysql against the seed's shell pipeline, measured in one run.

Starts a private MariaDB (tasks.local_stack.PrivateMariaDB) in a temporary folder, fills
`experiments` with N rows of the reference shape, then times:

  (a) the seed:  mariadb-dump | gzip -6 > file; copy it to two region folders; gzip -t
  (b) the bare dump:  mariadb-dump > /dev/null
  (c) the backup-mysql flow into two local regions, verification and manifest included
      (in its own process, whose peak RSS is reported)
  (d) the zstd floor:  mariadb-dump | zstd -3 -T0 > /dev/null

While (c) runs, a writer commits one row at a time into the same database; its longest
commit is `writer_stall_max_ms` (the global lock a backup holds shows up there), against
`writer_idle_max_ms`, the same writer's longest commit for 5 s without a backup.

The last line is:

    RESULT backup_vs_seed=<c/a> backup_vs_zstd_pipe=<c/d> backup_vs_dump=<c/b> peak_rss_mb=<x>
           rows=<N> writer_stall_max_ms=<ms> writer_idle_max_ms=<ms> exact_snapshot=<0|1>
           global_lock_ms=<ms>

Targets on 2 cores: backup_vs_seed <= 0.2, backup_vs_zstd_pipe <= 1.25, peak RSS <= 300 MB,
writer_stall_max_ms <= 1000, exact_snapshot=1.

Usage: uv run python bench/backup_mysql.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pymysql

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from blocks import MySQLConnection  # noqa: E402
from tasks.local_stack import PrivateMariaDB  # noqa: E402
from tasks.mysql import defaults_file  # noqa: E402
from tasks.sample_data import fill_experiments_server_side  # noqa: E402

DATABASE = "vibebench"
DUMP_FLAGS = "--single-transaction --quick --routines --triggers --events --hex-blob"

FLOW_RUNNER = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from flows.backup import BackupMySQLParams, backup_mysql
from flows.forms import params_of
params = BackupMySQLParams(source="bench", database="vibebench", connection_block=sys.argv[2],
                           store_block=sys.argv[3])
started = time.perf_counter()
manifest = backup_mysql(**params_of(params))
seconds = time.perf_counter() - started
print("FLOW " + json.dumps({"seconds": seconds, "size": manifest.total_size,
      "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      "hints": manifest.restore_hints}))
"""


class Writer(threading.Thread):
    """Commits one small row at a time until stopped; keeps the longest commit (ms)."""

    def __init__(self, conn: MySQLConnection) -> None:
        super().__init__(daemon=True)
        self.conn = conn
        self.stop = threading.Event()
        self.longest_ms = 0.0
        self.commits = 0

    def run(self) -> None:
        connection = pymysql.connect(**self.conn.pymysql_kwargs(DATABASE))
        with connection.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS writer_probe"
                " (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB"
            )
            while not self.stop.is_set():
                started = time.perf_counter()
                cur.execute("INSERT INTO writer_probe (v) VALUES (%s)", (self.commits,))
                self.longest_ms = max(self.longest_ms, 1000 * (time.perf_counter() - started))
                self.commits += 1
        connection.close()

    def finish(self) -> float:
        self.stop.set()
        if self.ident is not None:  # started
            self.join(timeout=60)
        return self.longest_ms


def shell(script: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vibeops-bench-backup-"))
    server = PrivateMariaDB(base_dir=work / "mariadb").start()
    try:
        run(args.rows, server, work)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(rows: int, server: PrivateMariaDB, work: Path) -> None:
    conn = MySQLConnection(host="127.0.0.1", port=server.port, user="root", database=DATABASE)
    started = time.perf_counter()
    fill_experiments_server_side(conn, DATABASE, rows)
    print(f"seeded {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)

    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    results: dict[str, float] = {}
    with defaults_file(conn) as defaults:
        dump = f"mariadb-dump --defaults-extra-file={defaults} {DUMP_FLAGS} {DATABASE}"
        seed_dir = work / "seed"
        (seed_dir / "a").mkdir(parents=True)
        (seed_dir / "b").mkdir(parents=True)
        dump_file = seed_dir / "vibebench.sql.gz"
        results["dump"] = shell(f"{dump} > /dev/null", env)
        results["zstd_pipe"] = shell(f"{dump} | zstd -3 -T0 -q > /dev/null", env)
        results["seed"] = shell(
            f"{dump} | gzip -6 > {dump_file} && cp {dump_file} {seed_dir}/a/ && "
            f"cp {dump_file} {seed_dir}/b/ && gzip -t {dump_file}",
            env,
        )
        seed_size = dump_file.stat().st_size
    idle = Writer(conn)
    idle.start()
    time.sleep(5)
    writer_idle_ms = idle.finish()
    writer = Writer(conn)
    try:
        flow = run_flow(conn, work, env, writer)
    finally:
        writer_stall_ms = writer.finish()
    results["flow"] = flow["seconds"]
    hints = flow["hints"]

    print(f"\n{'pipeline':<44} {'seconds':>8} {'size MB':>9}")
    print(
        f"{'(a) seed: dump | gzip -6, 2 copies, gzip -t':<44} {results['seed']:8.1f} {seed_size / 1e6:9.1f}"
    )
    print(f"{'(b) bare dump > /dev/null':<44} {results['dump']:8.1f}")
    print(
        f"{'(c) backup-mysql flow, 2 regions, verified':<44} {results['flow']:8.1f} {flow['size'] / 1e6:9.1f}"
    )
    print(f"{'(d) dump | zstd -3 -T0 > /dev/null':<44} {results['zstd_pipe']:8.1f}")
    print(
        f"writer during (c): {writer.commits:,} commits, longest {writer_stall_ms:.0f} ms "
        f"(alone: {writer_idle_ms:.0f} ms); facts exact: {hints.get('exact_snapshot')} by "
        f"{hints.get('exact_by')}, global lock {hints.get('global_lock_ms')} ms"
    )
    print(
        f"RESULT backup_vs_seed={results['flow'] / results['seed']:.3f}"
        f" backup_vs_zstd_pipe={results['flow'] / results['zstd_pipe']:.3f}"
        f" backup_vs_dump={results['flow'] / results['dump']:.3f}"
        f" peak_rss_mb={flow['peak_rss_kb'] / 1024:.0f} rows={rows}"
        f" writer_stall_max_ms={writer_stall_ms:.0f} writer_idle_max_ms={writer_idle_ms:.0f}"
        f" exact_snapshot={hints.get('exact_snapshot', 0)}"
        f" global_lock_ms={hints.get('global_lock_ms', -1)}"
    )


def run_flow(conn: MySQLConnection, work: Path, env: dict[str, str], writer: Writer) -> dict:
    """Run backup-mysql in its own process against a temporary Prefect server.

    `writer` starts once the server is up, just before the flow's process.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from blocks import BackupStore, LocalFolderDestination

    with prefect_test_harness(server_startup_timeout=600):
        store = BackupStore(
            destinations=[
                LocalFolderDestination(region="bench-a", path=str(work / "regions" / "a")),
                LocalFolderDestination(region="bench-b", path=str(work / "regions" / "b")),
            ]
        )
        conn.save("bench-mysql", overwrite=True)
        store.save("bench-store", overwrite=True)
        writer.start()
        out = subprocess.run(
            [sys.executable, "-c", FLOW_RUNNER, str(PROJECT_DIR), "bench-mysql", "bench-store"],
            env={
                **env,
                "PREFECT_API_URL": PREFECT_API_URL.value(),
                "PREFECT_LOGGING_LEVEL": "WARNING",
            },
            check=True,
            capture_output=True,
            text=True,
        )
    line = next(x for x in out.stdout.splitlines() if x.startswith("FLOW "))
    return json.loads(line[5:])  # type: ignore[no-any-return]


if __name__ == "__main__":
    main()
