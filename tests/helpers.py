"""Helpers shared by test modules: saved blocks, reading what a run left in the Prefect API."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pymysql
import zstandard
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, LogFilter

from blocks import BackupStore, LocalFolderDestination, MySQLConnection
from tasks.manifest import BackupManifest, parse_manifest
from tasks.mysql import defaults_file
from tasks.storage import LocalFolderStore

REGIONS = ("local-a", "local-b")


def back_up_to_local_regions(
    root: Path, source: str, server_block: str, **params: object
) -> BackupManifest:
    """Run backup-mysql of database `source` into two local-folder regions under `root`."""
    from flows.backup import BackupMySQLParams, backup_mysql
    from flows.forms import params_of

    model = BackupMySQLParams(
        source=source,
        database=source,
        connection_block=server_block,
        store_block=save_block(local_store(root)),
        **params,  # type: ignore[arg-type]
    )
    return backup_mysql(**params_of(model))


def markdown_of(flow_run_id: uuid.UUID, key_prefix: str = "restore-drill-") -> str:
    """The body of the run's Markdown artifact whose key starts with `key_prefix`."""
    for artifact in artifacts_of(flow_run_id):
        if artifact.type == "markdown" and (artifact.key or "").startswith(key_prefix):
            return str(artifact.data)
    raise AssertionError("no markdown report")


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


@dataclass
class Regions:
    """A per-test copy of the golden backup's two regions."""

    root: Path
    block: str
    manifest: BackupManifest

    @classmethod
    def copy_of(cls, root: Path, manifest: BackupManifest, copy: Path) -> Regions:
        """A copy of the regions under `root` in `copy`, with a store block of its own."""
        shutil.copytree(root, copy)
        return cls(copy, save_block(local_store(copy)), manifest)

    def object_path(self, region: str, manifest: BackupManifest | None = None) -> Path:
        m = manifest or self.manifest
        return self.root / region / m.object_key(m.objects[0].name)

    def flip_byte(self, region: str) -> None:
        path = self.object_path(region)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))

    def rewrite_manifest(self, **changes) -> None:
        for region in REGIONS:
            store = LocalFolderStore(region, self.root / region)
            current = parse_manifest(store.read_bytes(self.manifest.manifest_key))
            store.write_bytes(
                self.manifest.manifest_key, current.model_copy(update=changes).to_json()
            )

    def tamper_sql(self, edit: Callable[[str], str]) -> None:
        """Rewrite the dump in both regions and re-sign it in the manifests (a bad backup)."""
        sql = (
            zstandard.ZstdDecompressor()
            .decompressobj()
            .decompress(self.object_path(REGIONS[0]).read_bytes())
        )
        data = zstandard.ZstdCompressor(level=3).compress(edit(sql.decode()).encode())
        for region in REGIONS:
            self.object_path(region).write_bytes(data)
        obj = self.manifest.objects[0].model_copy(
            update={"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
        self.rewrite_manifest(objects=[obj])
