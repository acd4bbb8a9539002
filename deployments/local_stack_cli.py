"""What `vibeops up` does on one machine: a Prefect server, a MySQL, sample data, blocks.

Everything is local and embedded: a Prefect server on SQLite under VIBEOPS_HOME, the
MySQL at VIBEOPS_MYSQL_HOST:PORT (or a private MariaDB started in VIBEOPS_HOME/mariadb
when none answers), and two local folders standing in for the regional buckets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from blocks.defaults import local_mysql_connection
from blocks.paths import PROJECT_ROOT, vibeops_home
from deployments.processes import record_process, recorded_address, start_recorded
from tasks.local_stack import LocalServiceError, PrivateMariaDB, port_open

PREFECT_PORT = int(os.environ.get("VIBEOPS_PREFECT_PORT", "4200"))


def prefect_api_url() -> str:
    return os.environ.get("PREFECT_API_URL") or f"http://127.0.0.1:{PREFECT_PORT}/api"


def healthy(api_url: str) -> bool:
    """The Prefect API at `api_url` answers its health check."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:  # noqa: S310
            return bool(json.loads(response.read()))
    except (OSError, ValueError):
        return False


def ensure_prefect_server(timeout_seconds: float = 90) -> str:
    """A Prefect server on SQLite under VIBEOPS_HOME/prefect (started if none answers)."""
    api_url = prefect_api_url()
    if healthy(api_url):
        return api_url
    home = vibeops_home() / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "true",
    }
    env.pop("PREFECT_API_URL", None)
    start_recorded(
        "prefect-server",
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(PREFECT_PORT),
        ],
        log=home / "server.log",
        address=api_url,
        env=env,
        cwd=PROJECT_ROOT,
    )
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if healthy(api_url):
            return api_url
        time.sleep(0.5)
    raise LocalServiceError(
        f"Prefect server not healthy after {timeout_seconds}s; see {home}/server.log"
    )


def ensure_mysql() -> tuple[str, int, bool]:
    """(host, port, started_here): the configured MySQL, or a private MariaDB in VIBEOPS_HOME."""
    conn = local_mysql_connection()
    if port_open(conn.host, conn.port):
        return conn.host, conn.port, False
    base = vibeops_home() / "mariadb"
    port_file = base / "port"
    port = int(port_file.read_text()) if port_file.exists() else None
    if port and port_open("127.0.0.1", port):
        return "127.0.0.1", port, False
    server = PrivateMariaDB(base_dir=base, **({"port": port} if port else {}))
    server.start()
    port_file.write_text(str(server.port))
    assert server.process is not None
    record_process(
        "mariadb",
        server.process.pid,
        address=f"127.0.0.1:{server.port}",
        log=base / "error.log",
        first_signal="SIGTERM",  # mariadbd shuts down on SIGTERM and ignores SIGINT
    )
    return "127.0.0.1", server.port, True


def deploy_all(api_url: str, pool: str = "vibeops-process") -> None:
    """Create the process work pool (if missing) and register every deployment."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "VIBEOPS_PROJECT_DIR": str(PROJECT_ROOT)}
    prefect = [sys.executable, "-m", "prefect"]
    exists = subprocess.run([*prefect, "work-pool", "inspect", pool], env=env, capture_output=True)
    if exists.returncode != 0:
        subprocess.run(
            [*prefect, "work-pool", "create", pool, "--type", "process"],
            env=env,
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [*prefect, "--no-prompt", "deploy", "--all"],
        env=env,
        check=True,
        cwd=PROJECT_ROOT,
        capture_output=True,
    )


def start_worker(api_url: str, pool: str = "vibeops-process") -> Path:
    """Start a process worker for `pool` in the background (recorded); returns its log file."""
    log_path = vibeops_home() / "prefect" / "worker.log"
    start_recorded(
        "worker",
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
        log=log_path,
        address=f"pool {pool} on {api_url}",
        env={**os.environ, "PREFECT_API_URL": api_url},
        cwd=PROJECT_ROOT,
    )
    return log_path


def find_api_url() -> tuple[str | None, list[str]]:
    """(the first Prefect API that answers, every URL tried).

    Tried in order: PREFECT_API_URL, the server `vibeops up` recorded, the active Prefect
    profile's API URL, then the default local port.
    """
    from prefect.settings import get_current_settings

    candidates = [
        os.environ.get("PREFECT_API_URL"),
        recorded_address("prefect-server"),
        get_current_settings().api.url,
        f"http://127.0.0.1:{PREFECT_PORT}/api",
    ]
    tried: list[str] = []
    for url in candidates:
        if not url or url in tried:
            continue
        tried.append(url)
        if healthy(url):
            return url, tried
    return None, tried
