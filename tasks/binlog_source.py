"""The MySQL/MariaDB side of binlog archiving: server state, preflight, FLUSH, raw copies.

The archive user needs only `REPLICATION SLAVE, BINLOG MONITOR` (FLUSH BINARY LOGS, which
bounds the lag, also needs RELOAD). Copies use the server's own tool,
`mariadb-binlog --read-from-remote-server --raw`, with the credentials in a 0600
`--defaults-extra-file` given as the first option (never argv).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pymysql

from blocks.mysql import MySQLConnection
from tasks.binlog_manifest import binlog_index
from tasks.child_process import run as run_tool
from tasks.errors import ConfigurationError, DatabaseAuthError, ExternalCommandError
from tasks.mysql import connect, defaults_file, find_tool, one_row

COPY_TIMEOUT_SECONDS = 3600


@dataclass(frozen=True)
class BinaryLog:
    """One file of `SHOW BINARY LOGS`."""

    file: str
    size: int

    @property
    def index(self) -> int:
        return binlog_index(self.file)


@dataclass(frozen=True)
class BinlogServerState:
    """What the server says about its binary logs right now."""

    server_id: int
    log_bin: bool
    binlog_format: str
    gtid_binlog_state: str
    logs: list[BinaryLog]

    @property
    def active(self) -> BinaryLog | None:
        """The file the server writes to (every other file is closed)."""
        return self.logs[-1] if self.logs else None

    @property
    def closed(self) -> list[BinaryLog]:
        return self.logs[:-1]


def read_binlog_state(conn: MySQLConnection) -> BinlogServerState:
    """log_bin, binlog_format, server_id, GTID state and `SHOW BINARY LOGS`.

    Raises:
        ConfigurationError: binary logging is off (names log_bin and binlog_format=ROW).
        DatabaseAuthError: the user lacks BINLOG MONITOR (names the grant).
    """
    where = f"{conn.host}:{conn.port}"
    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.log_bin, @@GLOBAL.binlog_format, @@GLOBAL.server_id")
        log_bin, binlog_format, server_id = one_row(cur)
        cur.execute("SELECT @@GLOBAL.gtid_binlog_state")
        gtid_state = str(one_row(cur)[0] or "")
        if not int(log_bin):
            raise ConfigurationError(
                f"binary logging is off on {where} (log_bin=OFF): archive-binlogs has nothing "
                "to copy and no point-in-time recovery is possible. Start the server with "
                "log_bin (e.g. `log-bin=binlog`), binlog_format=ROW and a server_id, then take "
                "a new base backup (backup-mysql)."
            )
        try:
            cur.execute("SHOW BINARY LOGS")
            logs = [BinaryLog(str(row[0]), int(row[1])) for row in cur.fetchall()]
        except pymysql.err.MySQLError as exc:
            raise DatabaseAuthError(
                f"user {conn.user!r} on {where} cannot run SHOW BINARY LOGS ({exc.args[-1]}): "
                f"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO the archive user"
            ) from None
    return BinlogServerState(int(server_id), True, str(binlog_format), gtid_state, logs)


def binlog_format_problem(state: BinlogServerState) -> str | None:
    """Why replay could be inexact with this binlog_format (None when it is ROW)."""
    if state.binlog_format.upper() == "ROW":
        return None
    return (
        f"binlog_format={state.binlog_format}: statement events can replay differently "
        "(NOW(), RAND(), triggers); set binlog_format=ROW on the source for exact recovery"
    )


def flush_binary_logs(conn: MySQLConnection) -> str | None:
    """Close the active binary log (FLUSH BINARY LOGS); returns why not, or None when done."""
    with connect(conn) as connection, connection.cursor() as cur:
        try:
            cur.execute("FLUSH BINARY LOGS")
        except pymysql.err.MySQLError as exc:
            return (
                f"FLUSH BINARY LOGS refused for {conn.user!r} ({exc.args[-1]}); grant RELOAD "
                "to the archive user to bound the lag, or the lag grows until the server "
                "rotates the file itself (max_binlog_size)"
            )
    return None


def copy_command(binary: str, defaults_path: Path, dest_dir: Path, file: str) -> list[str]:
    """argv of a byte-identical remote copy of one binary log (no secrets)."""
    return [
        binary,
        f"--defaults-extra-file={defaults_path}",  # must be the first option
        "--read-from-remote-server",
        "--raw",
        f"--result-file={dest_dir}/",
        file,
    ]


def copy_binlog(
    conn: MySQLConnection, file: str, dest_dir: Path, timeout_s: float = COPY_TIMEOUT_SECONDS
) -> Path:
    """Copy binary log `file` from the server into `dest_dir/<file>`, byte for byte.

    Raises:
        ExternalCommandError: mariadb-binlog failed (stderr inside, never the password).
    """
    binary = find_tool("mariadb-binlog", "mysqlbinlog", package="mariadb-client")
    dest_dir.mkdir(parents=True, exist_ok=True)
    with defaults_file(conn) as cnf:
        try:
            done = run_tool(
                copy_command(binary, cnf, dest_dir, file),
                capture_output=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            raise ExternalCommandError(
                f"mariadb-binlog did not copy {file} within {timeout_s:.0f} s"
            ) from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()[-800:]
        raise ExternalCommandError(f"mariadb-binlog could not copy {file}: {message}")
    path = dest_dir / file
    if not path.is_file():
        raise ExternalCommandError(f"mariadb-binlog exited 0 but wrote no {path}")
    return path
