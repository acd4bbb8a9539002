"""InfluxDB hourly incrementals: a full base plus chained incrementals, restored in order by the
drill (RPO from the newest incremental), refused without a base, purged only with their base.
Real influxdb-client against the InfluxDB stand-in; local folders as the two regions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from influxdb_client import Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from prefect import flow

from tasks.catalog import scan_backups
from tasks.influx import to_ns
from tasks.influx_backup import find_influx_backup, restore_influx_copy
from tasks.object_purge import scan_backup_catalog
from tasks.retention import BackupFacts, BackupRule, Decision, decide_backups, plan_backup_rule
from tasks.storage import open_store
from tests.helpers import local_store
from tests.influx_standin import InfluxStandIn
from tests.test_influxdb import (
    _backup,
    _conn,
    _drill,
    _sample_points,
    _series,
    _state_exception,
)

NS = 1_000_000_000


def _write(server: InfluxStandIn, bucket: str, points: list[Point]) -> None:
    with _conn(server).get_client() as client:
        client.write_api(write_options=SYNCHRONOUS).write(bucket, server.org, points)


def _recent(tag: str, count: int, now_ns: int | None = None) -> list[Point]:
    """Points stamped in the last minute (odd nanoseconds), as live metrics are."""
    now_ns = now_ns or to_ns(datetime.now(UTC))
    return [
        Point("cpu load")
        .tag("host name", f"web {tag}")
        .field("usage", i / 3)
        .field("note", f'batch "{tag}" {i}')
        .time(now_ns - (count - i) * NS + 7, WritePrecision.NS)
        for i in range(count)
    ]


@pytest.fixture
def source_bucket(influx_server: InfluxStandIn) -> str:
    """A bucket holding the sample points of tests/test_influxdb.py (weeks old by now)."""
    name = f"metrics_{uuid.uuid4().hex[:8]}"
    with _conn(influx_server).get_client() as client:
        client.buckets_api().create_bucket(bucket_name=name, org=influx_server.org)
    _write(influx_server, name, _sample_points())
    return name


def test_full_then_two_incrementals_drill_restores_the_chain_exactly(
    influx_server: InfluxStandIn, source_bucket: str, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    source = source_bucket.replace("_", "-")
    full = _backup(influx_server, source_bucket, store).result()
    assert full.influxdb is not None and full.influxdb.mode == "full"

    first_ns = to_ns(datetime.now(UTC))
    first_batch = _recent("a", 40, first_ns)
    _write(influx_server, source_bucket, first_batch)
    inc1 = _backup(influx_server, source_bucket, store, mode="incremental").result()
    # Later writes: new points, and the same series+time as batch a with new values (overwrite).
    _write(influx_server, source_bucket, _recent("b", 25))
    overwritten = [
        Point("cpu load")
        .tag("host name", "web a")
        .field("usage", -1.5)
        .time(first_ns - (40 - i) * NS + 7, WritePrecision.NS)
        for i in range(5)
    ]
    _write(influx_server, source_bucket, overwritten)
    inc2 = _backup(influx_server, source_bucket, store, mode="incremental").result()

    for inc, previous in ((inc1, full), (inc2, inc1)):
        details = inc.influxdb
        assert details is not None and details.mode == "incremental"
        assert (details.base_backup_id, details.previous_backup_id) == (
            full.backup_id,
            previous.backup_id,
        )
        assert details.start == previous.consistent_at - timedelta(seconds=300)
    # An incremental holds only what is stamped since the previous point (not the old data).
    assert inc1.total_rows == 40 * 2
    assert inc2.total_rows == (40 + 25) * 2
    assert inc2.total_rows < full.total_rows

    # The chain, loaded in order into a scratch bucket, is the source bucket exactly.
    stores = {d.region: open_store(d) for d in store.destinations}
    search = find_influx_backup(stores, list(stores), source, "latest")
    assert [m.backup_id for m in search.chain] == [full.backup_id, inc1.backup_id, inc2.backup_id]
    scratch = f"drill_chain_{uuid.uuid4().hex[:6]}"
    conn = _conn(influx_server)

    @flow(name="restore-influxdb-chain-test")
    def restore_chain() -> int:
        return sum(
            restore_influx_copy(
                conn, link, stores["local-b"], scratch, 500, fresh=link is search.chain[0]
            ).points
            for link in search.chain
        )

    assert restore_chain() == full.total_rows + inc1.total_rows + inc2.total_rows
    assert _series(influx_server, scratch) == _series(influx_server, source_bucket)

    drill = _drill(influx_server, store, source)
    record = drill.result()
    assert record.passed, record
    assert record.backup_id == inc2.backup_id, "the drill restores up to the newest incremental"
    assert record.rows == full.total_rows + inc1.total_rows + inc2.total_rows
    assert record.rpo_seconds is not None
    assert record.rpo_target_seconds == 3600
    expected_rpo = (record.started_at - inc2.consistent_at).total_seconds()
    assert abs(record.rpo_seconds - expected_rpo) < 1, "RPO is measured from the last incremental"

    # Retention: the newest backup alone must be kept, yet it needs its base and inc1.
    rule = BackupRule(
        name="influx-backups",
        backup_kind="influxdb",
        keep_newest=1,
        archive_after_days=None,
        delete_after_days=1,
    )
    catalogs = {r: scan_backup_catalog(s, "influxdb", [source]) for r, s in stores.items()}
    plan = plan_backup_rule(rule, datetime.now(UTC) + timedelta(days=30), catalogs)
    assert not plan.steps, "nothing of the chain the newest incremental needs is purged"
    for region in stores:
        assert set(plan.decisions[region].values()) == {Decision.KEEP}


def test_drill_fails_when_a_chain_link_is_missing(
    influx_server: InfluxStandIn, source_bucket: str, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    source = source_bucket.replace("_", "-")
    _backup(influx_server, source_bucket, store).result()
    _write(influx_server, source_bucket, _recent("c", 10))
    inc1 = _backup(influx_server, source_bucket, store, mode="incremental").result()
    inc2 = _backup(influx_server, source_bucket, store, mode="incremental").result()
    for destination in store.destinations:
        open_store(destination).delete(inc1.manifest_key)
    drill = _drill(influx_server, store, source)
    message = str(_state_exception(drill))
    assert inc2.backup_id in message and inc1.backup_id in message and "chain" in message


def test_incremental_without_a_full_backup_fails_naming_what_to_run(
    influx_server: InfluxStandIn, source_bucket: str, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    state = _backup(influx_server, source_bucket, store, mode="incremental")
    message = str(_state_exception(state))
    assert "mode 'incremental'" in message and source_bucket in message
    assert "mode: full" in message and "backup-influxdb/nightly" in message
    source = source_bucket.replace("_", "-")
    for destination in store.destinations:
        assert scan_backups(open_store(destination), source, "influxdb") == []


def _facts(backup_id_day: datetime, base: str | None = None) -> BackupFacts:
    return BackupFacts(
        backup_id=f"{backup_id_day:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        taken_at=backup_id_day,
        committed=True,
        base_backup_id=base,
    )


@pytest.mark.parametrize(
    ("inc_ages", "keep_newest", "expected"),
    [
        # The incrementals are the newest two: kept, so their 100-day-old base stays too.
        ((99, 98), 2, Decision.KEEP),
        # The incremental is only archive-old: the delete-old base is archived with it.
        ((60,), 1, Decision.ARCHIVE),
    ],
)
def test_retention_keeps_a_base_while_its_incrementals_are_kept(
    inc_ages: tuple[int, ...], keep_newest: int, expected: Decision
) -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    base = _facts(now - timedelta(days=100))
    incs = [_facts(now - timedelta(days=a), base.backup_id) for a in inc_ages]
    newer_full = [] if keep_newest == 2 else [_facts(now - timedelta(days=1))]
    decided = decide_backups([base, *incs, *newer_full], now, keep_newest=keep_newest)
    assert decided[base.backup_id] == expected
    assert {decided[i.backup_id] for i in incs} == {expected}


def test_retention_deletes_incrementals_together_with_their_base() -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    base = _facts(now - timedelta(days=100))
    inc = _facts(now - timedelta(days=99), base.backup_id)
    newest = _facts(now - timedelta(days=1))
    decided = decide_backups([base, inc, newest], now, keep_newest=1)
    assert decided[base.backup_id] == decided[inc.backup_id] == Decision.DELETE
    assert decided[newest.backup_id] == Decision.KEEP
