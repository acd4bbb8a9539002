"""Local stand-ins for production services: a private MariaDB and a GCS API server.

Used by the `vibeops` CLI (embedded defaults) and by the test suite. Nothing here is
used in production, where blocks point at Cloud SQL and GCS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tasks.errors import ConfigurationError, VibeOpsError


class LocalServiceError(VibeOpsError):
    """A local service could not be started."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout_seconds: float, what: str) -> None:
    """Wait until host:port accepts connections, or raise LocalServiceError."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise LocalServiceError(f"{what} did not listen on {host}:{port} within {timeout_seconds}s")


def _mariadb_binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or (
            f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
        )
        if found:
            return found
    raise ConfigurationError(
        f"none of {', '.join(names)} is installed: apt-get install -y mariadb-server mariadb-client"
    )


@dataclass
class PrivateMariaDB:
    """A throwaway MariaDB server in its own datadir, on its own port and socket."""

    base_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    binary_log: bool = True  # log-bin + binlog-format=ROW (point-in-time recovery needs them)

    @property
    def datadir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_path(self) -> Path:
        return self.base_dir / "mysqld.sock"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "my.cnf"

    def start(self, timeout_seconds: float = 60) -> PrivateMariaDB:
        """Initialise the datadir if needed and start the server; returns self."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # Its own tmpdir: a server deletes stray #sql* files in its tmpdir when it starts.
        (self.base_dir / "tmp").mkdir(exist_ok=True)
        self.config_path.write_text(
            "[mariadbd]\n"
            f"datadir={self.datadir}\n"
            f"socket={self.socket_path}\n"
            f"port={self.port}\n"
            "bind-address=127.0.0.1\n"
            f"pid-file={self.base_dir / 'mysqld.pid'}\n"
            f"tmpdir={self.base_dir / 'tmp'}\n"
            f"log-error={self.base_dir / 'error.log'}\n"
            + (
                f"log-bin={self.base_dir / 'binlog'}\nserver-id=1\nbinlog-format=ROW\n"
                if self.binary_log
                else "skip-log-bin\n"
            )
            + "user=root\n"
            "skip-name-resolve\n"
            "innodb-buffer-pool-size=256M\n"
            "innodb-log-file-size=256M\n"
            "innodb-flush-log-at-trx-commit=2\n"
            "max-allowed-packet=256M\n"
            "local-infile=1\n"
        )
        if not (self.datadir / "mysql").exists():
            subprocess.run(
                [
                    _mariadb_binary("mariadb-install-db", "mysql_install_db"),
                    f"--defaults-file={self.config_path}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self.process = subprocess.Popen(
            [_mariadb_binary("mariadbd", "mysqld"), f"--defaults-file={self.config_path}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.base_dir / "error.log").read_text(errors="replace")[-2000:]
                raise LocalServiceError(f"mariadbd exited early:\n{log}")
            if port_open("127.0.0.1", self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise LocalServiceError(f"mariadbd did not listen on port {self.port} in time")

    def stop(self, timeout_seconds: float = 30) -> None:
        """Stop the server (SIGTERM, then SIGKILL after the timeout)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class GcsEmulator:
    """gcp-storage-emulator in a child process: the real GCS JSON API on localhost."""

    port: int = field(default_factory=free_port)
    data_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_seconds: float = 30) -> GcsEmulator:
        """Start the emulator (in memory unless data_dir is set); returns self."""
        code = (
            "import sys, logging\n"
            "logging.disable(logging.CRITICAL)\n"
            "from gcp_storage_emulator.server import create_server\n"
            "port = int(sys.argv[1]); data_dir = sys.argv[2] or None\n"
            "server = create_server('127.0.0.1', port, in_memory=data_dir is None,"
            " data_dir=data_dir)\n"
            "server.run()\n"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(self.port), str(self.data_dir or "")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, timeout_seconds, "gcp-storage-emulator")
        return self

    def stop(self) -> None:
        """Kill the emulator at once (tests use this to simulate an outage)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def emulator_environment(endpoint: str) -> Iterator[None]:
    """Point google-cloud-storage at a local endpoint for the duration of the block."""
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
