"""Helpers shared by test modules: saved blocks, reading what a run left in the Prefect API."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pymysql
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, LogFilter

from blocks import BackupStore, LocalFolderDestination, MySQLConnection
from tasks.mysql import defaults_file


def save_block(block: Block, prefix: str = "t") -> str:
    """Save `block` under a unique name in the test Prefect API and return the name."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    block.save(name, overwrite=True)
    return name


def local_store(root: Path, regions: tuple[str, ...] = ("local-a", "local-b")) -> BackupStore:
    """A BackupStore of local folders under `root`, one per region."""
    return BackupStore(
        destinations=[
            LocalFolderDestination(region=region, path=str(root / region)) for region in regions
        ]
    )


def run_texts(flow_run_id: uuid.UUID) -> str:
    """Every log line, artifact body and event of a flow run, as one string (secret scans)."""
    with get_client(sync_client=True) as client:
        logs: list = []
        while page := client.read_logs(
            log_filter=LogFilter(flow_run_id={"any_": [flow_run_id]}), limit=200, offset=len(logs)
        ):
            logs += page
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}), limit=200
        )
        response = client.request(
            "POST",
            "/events/filter",
            json={"filter": {"event": {"prefix": ["vibeops."]}}, "limit": 50},
        )
    parts = [log.message for log in logs]
    parts += [str(a.data) + str(a.description) for a in artifacts]
    parts.append(response.text)
    return "\n".join(parts)


def events_of(name: str, flow_run_id: uuid.UUID, attempts: int = 60) -> list[dict]:
    """Events called `name` related to one flow run (they arrive asynchronously: poll briefly)."""
    body = {
        "filter": {
            "event": {"name": [name]},
            "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 10,
    }
    with get_client(sync_client=True) as client:
        for _ in range(attempts):
            events = client.request("POST", "/events/filter", json=body).json()["events"]
            if events:
                return list(events)
            time.sleep(0.25)
    return []


def artifacts_of(flow_run_id: uuid.UUID) -> list:
    """Artifacts created by one flow run."""
    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id={"any_": [flow_run_id]}), limit=200
            )
        )


def load_sql(conn: MySQLConnection, database: str, sql: bytes) -> None:
    """Load a dump into `database` with the mariadb client (password via defaults file)."""
    with defaults_file(conn) as defaults:
        subprocess.run(
            ["mariadb", f"--defaults-extra-file={defaults}", database],
            input=sql,
            check=True,
            capture_output=True,
            timeout=600,
        )


def fill_noise(conn: MySQLConnection, database: str, rows: int) -> None:
    """`rows` incompressible 100 kB rows in `database`.noise (id INT key, data LONGBLOB)."""
    connection = pymysql.connect(**conn.pymysql_kwargs(database))
    try:
        with connection.cursor() as cur:
            for start in range(0, rows, 50):
                batch = range(start, min(start + 50, rows))
                cur.executemany(
                    "INSERT INTO noise VALUES (%s, %s)", [(i, os.urandom(100_000)) for i in batch]
                )
    finally:
        connection.close()


def child_argvs(*binary_names: str) -> list[tuple[int, bytes]]:
    """(pid, cmdline) of this process's children running one of `binary_names`.

    Each cmdline is read once: a child that has exited (a zombie) reads as empty and is skipped.
    """
    found = []
    wanted = tuple(name.encode() for name in binary_names)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        program = cmdline.split(b"\0", 1)[0]
        if program and program.endswith(wanted) and parent == os.getpid():
            found.append((int(entry.name), cmdline))
    return found
