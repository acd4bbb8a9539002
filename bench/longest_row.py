"""Benchmark: the cost of recording each table's longest BLOB/TEXT row in a backup's manifest.

Starts its own private MariaDB, seeds the `experiments`-shaped table of
bench/restore_mysql.py (a ~500-byte TEXT payload per row) with N rows, then times, in
interleaved rounds on the same snapshot connection as a backup uses:

  (a) baseline: CHECKSUM TABLE of every table (what a backup already does per table)
  (b) tasks.mysql.longest_lob_rows (one MAX(LENGTH(...)) scan of tables with LOB columns)

and prints, last:

    RESULT longest_row_vs_checksum=<b/a> longest_row_s=<b> checksum_s=<a> rows=<N>

Usage: uv run python bench/longest_row.py [--rows 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(PROJECT_DIR / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from restore_mysql import seed  # type: ignore[import-not-found]

    from blocks import MySQLConnection
    from tasks.local_stack import PrivateMariaDB
    from tasks.mysql import connect, longest_lob_rows, quote_identifier

    workdir = Path(tempfile.mkdtemp(prefix="vibeops-bench-longest-"))
    server = PrivateMariaDB(base_dir=workdir / "mariadb").start()
    try:
        conn = MySQLConnection(host="127.0.0.1", port=server.port, user="root", database="")
        seed(conn, "bench", args.rows)
        with connect(conn, "bench") as connection, connection.cursor() as cur:
            cur.execute("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
            tables = [str(r[0]) for r in cur.fetchall()]
            checksum_s, longest_s = [], []
            longest: dict[str, int] = {}
            for _ in range(args.rounds):
                started = time.perf_counter()
                for table in tables:
                    cur.execute(f"CHECKSUM TABLE {quote_identifier(table)}")
                    cur.fetchall()
                checksum_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                longest = longest_lob_rows(cur, "bench", tables)
                longest_s.append(time.perf_counter() - started)
        a, b = statistics.median(checksum_s), statistics.median(longest_s)
        print(f"tables scanned for LOB columns: {sorted(longest)}; longest rows {longest}")
        print(f"CHECKSUM TABLE (all tables): {a:.3f} s; longest_lob_rows: {b:.3f} s")
        print(
            f"RESULT longest_row_vs_checksum={b / a:.2f} longest_row_s={b:.3f} "
            f"checksum_s={a:.3f} rows={args.rows}"
        )
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
