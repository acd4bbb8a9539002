"""Triggers, routines and events as a `mariadb-dump` companion file (engine `mydumper`).

mydumper 0.10 writes stored programs without the `sql_mode` they were created with, so
myloader recreates them under the restore server's mode. mariadb-dump keeps the mode, the
client character set and the collations of each program. The mydumper engine therefore dumps
only tables and views with mydumper, and the stored programs with mariadb-dump into
`PROGRAMS_FILE` inside the same archive; a restore loads that file with the `mariadb`
client after myloader has loaded the tables. Credentials go through a 0600 defaults file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from blocks.mysql import MySQLConnection
from tasks.errors import ExternalCommandError, RestoreLoadError
from tasks.mysql import defaults_file, find_tool

# No ".sql" in the name: myloader would take such a file for table data.
PROGRAMS_FILE = "vibeops-stored-programs.mariadb-dump"


def programs_dump_command(binary: str, defaults: Path, database: str) -> list[str]:
    """argv of mariadb-dump writing only the triggers, routines and events of `database`."""
    return [
        binary,
        f"--defaults-extra-file={defaults}",
        "--no-data",
        "--no-create-info",
        "--skip-opt",
        "--routines",
        "--triggers",
        "--events",
        "--skip-dump-date",
        "--default-character-set=utf8mb4",
        database,
    ]


def dump_stored_programs(
    conn: MySQLConnection, database: str, path: Path, timeout_s: float = 600
) -> None:
    """Write the stored programs of `database` to `path`; ExternalCommandError on failure."""
    binary = find_tool("mariadb-dump", "mysqldump", package="mariadb-client")
    with defaults_file(conn) as cnf, path.open("xb") as out:
        done = subprocess.run(
            programs_dump_command(binary, cnf, database),
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=timeout_s,
        )
    if done.returncode != 0:
        raise ExternalCommandError(
            f"mariadb-dump of the stored programs of {database!r} exited with "
            f"{done.returncode}: {done.stderr.decode(errors='replace').strip()[-500:]}"
        )


def load_stored_programs(
    server: MySQLConnection,
    database: str,
    path: Path,
    skip_binlog: bool = False,
    timeout_s: float = 600,
) -> None:
    """Load a PROGRAMS_FILE into `database` with the client; RestoreLoadError with its message."""
    binary = find_tool("mariadb", "mysql", package="mariadb-client")
    with defaults_file(server) as cnf, path.open("rb") as source:
        argv = [
            binary,
            f"--defaults-extra-file={cnf}",
            "--batch",
            "--binary-mode",
            "--default-character-set=utf8mb4",
            f"--database={database}",
        ]
        if skip_binlog:
            argv.append("--init-command=SET SESSION sql_log_bin=0")
        try:
            done = subprocess.run(argv, stdin=source, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RestoreLoadError(
                f"loading the stored programs did not finish within {timeout_s:.0f}s"
            ) from None
    if done.returncode != 0:
        raise RestoreLoadError(
            "loading the stored programs (triggers, routines, events) failed: "
            + done.stderr.decode(errors="replace").strip()[-800:]
        )
