"""Point-in-time replay against a real MariaDB (log_bin ON, binlog_format=ROW).

One scenario per module: a base backup, a writer inserting and updating while closed binlogs
are archived every second into two local regions, a second base in the middle, more writes.
Each test restores on a throwaway server and checks the result exactly against the writer's
own log of commits.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pymysql
import pytest

from blocks import MySQLConnection
from flows.backup import BackupMySQLParams, backup_mysql
from tasks.binlog_replay import check_fetched_chain, fetch_segments
from tasks.errors import RecoveryChainBroken
from tasks.local_stack import PrivateMariaDB
from tasks.manifest import BackupManifest
from tasks.pitr_restore import (
    choose_segments,
    prove_chain,
    replay_to,
    restore_base_on_server,
)
from tasks.storage import ObjectStore, open_store
from tests.helpers import local_store, save_block
from tests.pitr_fixtures import (
    Archiver,
    Commit,
    Writer,
    create_writer_table,
    expected_state,
    start_binlog_server,
)

pytestmark = pytest.mark.mysql
REGIONS = ("local-a", "local-b")


@dataclass
class Scenario:
    server: PrivateMariaDB
    conn: MySQLConnection
    database: str
    root: Path
    older: BackupManifest
    newer: BackupManifest
    log: list[Commit]
    cutoff: float  # a whole second between `older` and `newer`, with writes on both sides
    archiver: Archiver


def _stores(root: Path) -> dict[str, ObjectStore]:
    return {d.region: open_store(d) for d in local_store(root, REGIONS).destinations}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory):
    server, conn = start_binlog_server(tmp_path_factory.mktemp("binlog-server"))
    database = f"shop_{uuid.uuid4().hex[:6]}"
    root = tmp_path_factory.mktemp("store")
    try:
        create_writer_table(conn, database)
        params = dict(
            source=database,
            database=database,
            connection_block=save_block(conn),
            store_block=save_block(local_store(root, REGIONS)),
        )
        archiver = Archiver(server, conn, list(_stores(root).values()), database)
        archiver.run()
        older = backup_mysql(BackupMySQLParams(**params))  # type: ignore[arg-type]
        writer = Writer(conn, database, rate_per_s=150).start()
        for _ in range(3):
            time.sleep(1.0)
            archiver.run()
        cutoff = float(int(time.time()) + 1)
        while time.time() < cutoff + 1.2:
            time.sleep(0.2)
        archiver.run()
        newer = backup_mysql(BackupMySQLParams(**params))  # type: ignore[arg-type]
        for _ in range(3):
            time.sleep(1.0)
            archiver.run()
        writer.stop()
        archiver.run()
        yield Scenario(server, conn, database, root, older, newer, writer.log, cutoff, archiver)
    finally:
        server.stop()


def _rows(conn: MySQLConnection, database: str) -> dict[int, int]:
    db = pymysql.connect(**conn.pymysql_kwargs(database))
    with db.cursor() as cur:
        cur.execute("SELECT id, v FROM w WHERE note NOT LIKE 'seed%'")
        rows = {int(r[0]): int(r[1]) for r in cur.fetchall()}
    db.close()
    return rows


def _checksum(conn: MySQLConnection, database: str) -> tuple[int, int]:
    db = pymysql.connect(**conn.pymysql_kwargs(database))
    with db.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM w")
        count = int(cur.fetchone()[0])
        cur.execute("CHECKSUM TABLE w")
        checksum = int(cur.fetchone()[1])
    db.close()
    return count, checksum


def _restore(scenario: Scenario, root: Path, base: BackupManifest, **kwargs):
    stores = _stores(root)
    choice = choose_segments(stores, list(REGIONS), base)
    assert choice.gap is None, choice.gap
    restored = restore_base_on_server(
        base, stores, list(REGIONS), "pitr-test", protected_ports=[scenario.server.port]
    )
    try:
        outcome = replay_to(
            base, choice.segments, stores, list(REGIONS), restored.connection, **kwargs
        )
        return outcome, _rows(restored.connection, base.database), _checksum(
            restored.connection, base.database
        )
    finally:
        restored.server.remove()


def test_restore_to_a_time_holds_every_commit_before_it_and_none_after(scenario: Scenario):
    """From the older base to T: exactly the writer's commits acknowledged before T."""
    to = datetime.fromtimestamp(scenario.cutoff, UTC)
    outcome, rows, _ = _restore(scenario, scenario.root, scenario.older, to=to)
    must, maybe = expected_state(scenario.log, scenario.cutoff)
    after = {c.row for c in scenario.log if c.op == "insert" and c.sent >= scenario.cutoff}
    assert len(must) > 100 and after, "the writer wrote on both sides of T"
    missing = sorted(set(must) - set(rows))
    assert not missing, f"rows committed before T missing: {missing[:10]}"
    extra = sorted(set(rows) - set(must) - maybe)
    assert not extra, f"rows committed after T present: {extra[:10]}"
    wrong = {r: (rows[r], must[r]) for r in must if not must[r][0] <= rows[r] <= must[r][1]}
    assert not wrong, f"update counts differ from the writer's log: {list(wrong.items())[:5]}"
    assert outcome.result.point_at is not None and outcome.result.point_at < to
    assert outcome.result.transactions >= len(must) - len(maybe)
    assert len(outcome.fetched) >= 3


def test_latest_holds_everything_archived(scenario: Scenario):
    """From the newer base to the end of the chain: the table equals the source's."""
    outcome, rows, restored = _restore(scenario, scenario.root, scenario.newer)
    assert restored == _checksum(scenario.conn, scenario.database)
    assert set(rows) == {c.row for c in scenario.log if c.op == "insert"}
    last = scenario.archiver.archived[max(scenario.archiver.archived)].last_event_at
    assert outcome.result.point_at is not None and last is not None
    assert outcome.result.point_at <= last


def test_chain_proof_passes(scenario: Scenario):
    stores = _stores(scenario.root)
    proof = prove_chain(
        scenario.older, scenario.newer, stores, list(REGIONS), "proof", [scenario.server.port]
    )
    assert proof.ok, proof.problems
    assert proof.replay is not None and proof.replay.result.transactions > 100
    assert {p.table for p in proof.parity} == set(scenario.newer.tables)


def _copy_store(scenario: Scenario, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(scenario.root, root)
    return root


def _middle_segment(scenario: Scenario):
    stores = _stores(scenario.root)
    chain = choose_segments(stores, list(REGIONS), scenario.older).segments
    assert len(chain) >= 4
    return chain, chain[len(chain) // 2]


def test_chain_proof_fails_when_one_segment_is_removed(scenario: Scenario, tmp_path: Path):
    root = _copy_store(scenario, tmp_path)
    _chain, middle = _middle_segment(scenario)
    for store in _stores(root).values():
        store.delete(middle.manifest_key)
        store.delete(middle.object_key)
    proof = prove_chain(
        scenario.older, scenario.newer, _stores(root), list(REGIONS), "proof", [scenario.server.port]
    )
    assert not proof.ok
    assert proof.gap is not None and middle.file in str(proof.gap)
    assert any("rows" in p or "CHECKSUM" in p for p in proof.problems), proof.problems


def test_missing_middle_file_is_refused_before_replay(scenario: Scenario, tmp_path: Path):
    """mariadb-binlog exits 0 over a hole; the chain check on the downloaded files does not."""
    chain, middle = _middle_segment(scenario)
    holed = [s for s in chain if s.file != middle.file]
    fetched = fetch_segments(_stores(scenario.root), list(REGIONS), holed, tmp_path)
    with pytest.raises(RecoveryChainBroken, match="missing"):
        check_fetched_chain(scenario.older.gtid or "", fetched)


def test_corrupt_segment_in_one_region_falls_back_to_the_other(
    scenario: Scenario, tmp_path: Path
):
    root = _copy_store(scenario, tmp_path)
    _chain, middle = _middle_segment(scenario)
    path = root / "local-a" / middle.object_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    outcome, _rows_after, restored = _restore(scenario, root, scenario.older)
    assert restored == _checksum(scenario.conn, scenario.database)
    used = {f.segment.file: f.region for f in outcome.fetched}
    assert used[middle.file] == "local-b"
    assert "corrupt" in outcome.fallbacks[middle.file]["local-a"] or "differ" in (
        outcome.fallbacks[middle.file]["local-a"]
    )
