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
from flows.backup import backup_mysql
from flows.restore_drill import restore_drill
from flows.restore_mysql import restore_mysql
from tasks.binlog_replay import check_fetched_chain, fetch_segments
from tasks.errors import RecoveryChainBroken, RestoreRefused
from tasks.local_stack import PrivateMariaDB
from tasks.manifest import BackupManifest
from tasks.pitr_restore import (
    choose_segments,
    prove_chain,
    replay_to,
    restore_base_on_server,
)
from tasks.storage import ObjectStore, open_store
from tests.helpers import events_of, local_store, run_texts, save_block
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
    connection_block: str
    store_block: str


def _stores(root: Path) -> dict[str, ObjectStore]:
    return {d.region: open_store(d) for d in local_store(root, REGIONS).destinations}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory):
    server, conn = start_binlog_server(tmp_path_factory.mktemp("binlog-server"))
    database = f"shop_{uuid.uuid4().hex[:6]}"
    root = tmp_path_factory.mktemp("store")
    try:
        create_writer_table(conn, database)
        params: dict[str, str] = dict(
            source=database,
            database=database,
            connection_block=save_block(conn),
            store_block=save_block(local_store(root, REGIONS)),
        )
        archiver = Archiver(
            params["connection_block"],
            params["store_block"],
            list(_stores(root).values()),
            database,
        )
        archiver.run()
        older = backup_mysql(**params)
        writer = Writer(conn, database, rate_per_s=150).start()
        for _ in range(3):
            time.sleep(1.0)
            archiver.run()
        cutoff = float(int(time.time()) + 1)
        while time.time() < cutoff + 1.2:
            time.sleep(0.2)
        archiver.run()
        newer = backup_mysql(**params)
        for _ in range(3):
            time.sleep(1.0)
            archiver.run()
        writer.stop()
        archiver.run()
        yield Scenario(
            server,
            conn,
            database,
            root,
            older,
            newer,
            writer.log,
            cutoff,
            archiver,
            params["connection_block"],
            params["store_block"],
        )
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
        return (
            outcome,
            _rows(restored.connection, base.database),
            _checksum(restored.connection, base.database),
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
        scenario.older,
        scenario.newer,
        _stores(root),
        list(REGIONS),
        "proof",
        [scenario.server.port],
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


def test_corrupt_segment_in_one_region_falls_back_to_the_other(scenario: Scenario, tmp_path: Path):
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
    assert (
        "corrupt" in outcome.fallbacks[middle.file]["local-a"]
        or "differ" in (outcome.fallbacks[middle.file]["local-a"])
    )


# -- restore-mysql, the runbook -----------------------------------------------------------------


def _sql(conn: MySQLConnection, sql: str, *args: object) -> list[tuple]:
    db = pymysql.connect(**conn.pymysql_kwargs())
    try:
        with db.cursor() as cur:
            cur.execute(sql, args or None)
            return list(cur.fetchall())
    finally:
        db.close()


def _databases(conn: MySQLConnection) -> set[str]:
    return {str(r[0]) for r in _sql(conn, "SHOW DATABASES")}


def _committed(scenario: Scenario, source: str) -> list[str]:
    from tasks.catalog import committed_backups

    return [m.backup_id for m in committed_backups(_stores(scenario.root)["local-a"], source)]


def test_restore_mysql_to_a_time_into_a_new_database(scenario: Scenario):
    """The runbook end to end, as a restricted user whose password must never leak."""
    secret = f"Rst-{uuid.uuid4().hex}"
    _sql(scenario.conn, f"CREATE USER 'restorer'@'127.0.0.1' IDENTIFIED BY '{secret}'")
    _sql(scenario.conn, "GRANT ALL PRIVILEGES ON *.* TO 'restorer'@'127.0.0.1'")
    user = MySQLConnection(
        host="127.0.0.1", port=scenario.server.port, user="restorer", password=secret, database=""
    )
    target_db = f"restored_{uuid.uuid4().hex[:6]}"
    to = datetime.fromtimestamp(scenario.cutoff, UTC)
    state = restore_mysql(
        source=scenario.database,
        store_block=scenario.store_block,
        target_connection_block=save_block(user),
        target_database=target_db,
        to=to.isoformat(),
        dry_run=False,
        return_state=True,
    )
    report = state.result()
    assert report.outcome == "restored" and report.base_id == scenario.older.backup_id
    rows = _rows(scenario.conn, target_db)
    must, maybe = expected_state(scenario.log, scenario.cutoff)
    assert not set(must) - set(rows), "rows committed before T missing"
    assert not set(rows) - set(must) - maybe, "rows committed after T present"
    assert all(must[r][0] <= rows[r] <= must[r][1] for r in must)
    # the new database has the source's default character set and collation (from the manifest)
    defaults = (
        "SELECT default_character_set_name, default_collation_name"
        " FROM information_schema.schemata WHERE schema_name = %s"
    )
    assert _sql(scenario.conn, defaults, target_db) == _sql(
        scenario.conn, defaults, scenario.database
    )
    assert report.transactions_replayed > 100 and report.point_reached is not None
    assert report.point_reached < to and report.rto is not None
    flow_run_id = state.state_details.flow_run_id
    texts = run_texts(flow_run_id)
    assert "point reached" in texts and "Timeline" in texts
    assert secret not in texts
    events = events_of("vibeops.restore.restored", flow_run_id)
    assert events and events[0]["payload"]["transactions_replayed"] == report.transactions_replayed


def test_restore_mysql_refuses_a_non_empty_target(scenario: Scenario):
    before = _checksum(scenario.conn, scenario.database)
    with pytest.raises(RestoreRefused, match="mode 'replace' with confirm"):
        restore_mysql(
            source=scenario.database,
            store_block=scenario.store_block,
            target_connection_block=scenario.connection_block,
            target_database=scenario.database,
            dry_run=False,
        )
    assert _checksum(scenario.conn, scenario.database) == before


def _live_copy(scenario: Scenario) -> str:
    live = f"live_{uuid.uuid4().hex[:6]}"
    _sql(scenario.conn, f"CREATE DATABASE {live}")
    _sql(scenario.conn, f"CREATE TABLE {live}.w (id INT PRIMARY KEY, v INT, note VARCHAR(40))")
    _sql(scenario.conn, f"INSERT INTO {live}.w VALUES (1, 1, 'old'), (2, 2, 'old'), (3, 3, 'old')")
    _sql(scenario.conn, f"CREATE TABLE {live}.extra (id INT PRIMARY KEY)")
    return live


def test_replace_with_a_wrong_confirm_is_refused_before_anything_changes(scenario: Scenario):
    live = _live_copy(scenario)
    databases = _databases(scenario.conn)
    with pytest.raises(RestoreRefused, match="type its name"):
        restore_mysql(
            source=scenario.database,
            store_block=scenario.store_block,
            target_connection_block=scenario.connection_block,
            target_database=live,
            mode="replace",
            confirm=live.upper(),
            dry_run=False,
        )
    assert _databases(scenario.conn) == databases
    assert _committed(scenario, live) == [], "no final backup was taken"
    assert _sql(scenario.conn, f"SELECT COUNT(*) FROM {live}.w")[0][0] == 3


def test_dry_run_is_the_default_and_changes_nothing(scenario: Scenario):
    target_db = f"restored_{uuid.uuid4().hex[:6]}"
    report = restore_mysql(
        source=scenario.database,
        store_block=scenario.store_block,
        target_connection_block=scenario.connection_block,
        target_database=target_db,
    )
    assert report.outcome == "planned" and report.base_id == scenario.newer.backup_id
    assert report.segments >= 3
    assert target_db not in _databases(scenario.conn)


def test_replace_takes_a_final_backup_swaps_and_keeps_the_old_tables(scenario: Scenario):
    live = _live_copy(scenario)
    report = restore_mysql(
        source=scenario.database,
        store_block=scenario.store_block,
        target_connection_block=scenario.connection_block,
        target_database=live,
        mode="replace",
        confirm=live,
        dry_run=False,
    )
    assert report.outcome == "restored" and report.final_backup_id is not None
    assert _committed(scenario, live) == [report.final_backup_id]
    assert _checksum(scenario.conn, live) == _checksum(scenario.conn, scenario.database)
    assert report.kept_as is not None and report.kept_as.startswith(f"{live}__before_")
    kept = {str(r[0]) for r in _sql(scenario.conn, f"SHOW TABLES FROM {report.kept_as}")}
    assert kept == {"w", "extra"}
    assert _sql(scenario.conn, f"SELECT COUNT(*) FROM {report.kept_as}.w")[0][0] == 3
    assert not [d for d in _databases(scenario.conn) if d.startswith(f"{live}__restore_")]


# -- restore-drill replays ---------------------------------------------------------------------


def test_restore_drill_replays_the_archive_and_measures_rpo_to_the_last_event(
    scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("VIBEOPS_HOME", str(tmp_path / "home"))
    source_before = _checksum(scenario.conn, scenario.database)
    databases = _databases(scenario.conn)
    state = restore_drill(
        source=scenario.database,
        store_block=scenario.store_block,
        drill_server_block=scenario.connection_block,
        prove_chain=True,
        return_state=True,
    )
    record = state.result()
    assert record.passed, record.reasons
    assert record.backup_id == scenario.newer.backup_id
    last = max(s.last_event_at for s in scenario.archiver.archived.values() if s.last_event_at)
    expected_rpo = (record.started_at - last).total_seconds()
    assert record.rpo_seconds is not None
    assert abs(record.rpo_seconds - expected_rpo) < 1.0, (record.rpo_seconds, expected_rpo)
    assert record.rpo_seconds < (record.started_at - scenario.newer.consistent_at).total_seconds()
    assert record.phases.get("replay", 0) > 0
    texts = run_texts(state.state_details.flow_run_id)
    assert "Replayed" in texts
    assert f"Chain proof passed ✅: base `{scenario.older.backup_id}`" in texts
    # the source and its server are untouched: no scratch database, same data
    assert _databases(scenario.conn) == databases
    assert _checksum(scenario.conn, scenario.database) == source_before
