"""cleanup-drills on MongoDB and InfluxDB: leftovers of crashed drills, with real pymongo and
influxdb-client against the stand-ins (and the private MariaDB as the drill server)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks import InfluxConnection, MongoConnection, MySQLConnection
from flows.forms import params_of
from flows.restore_drill import INFLUX_ITEM, MONGO_ITEM, CleanupDrillsParams, cleanup_drills
from tasks.drill import CleanupItem, DrillMarker
from tasks.errors import DatabaseUnreachable
from tasks.influx import (
    InfluxSession,
    delete_drill_bucket,
    drill_bucket_description,
    parse_drill_bucket_description,
    read_influx_drill_markers,
)
from tasks.local_stack import free_port
from tasks.mongo import MARKER_COLLECTION, drop_drill_database, read_mongo_drill_markers
from tests.helpers import artifacts_of, events_of, save_block
from tests.influx_standin import InfluxStandIn

pytestmark = pytest.mark.mysql


@pytest.fixture(autouse=True)
def vibeops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VIBEOPS_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def server_block(mysql_root: MySQLConnection) -> str:
    return save_block(mysql_root)


def _ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def _names() -> dict[str, str]:
    unique = uuid.uuid4().hex[:8]
    return {k: f"drill_t{unique}_{k}" for k in ("old", "young", "forced", "unmarked")}


def _items(plan: list[CleanupItem], what: str, names: dict[str, str]) -> dict[str, CleanupItem]:
    by_name = {i.database: i for i in plan if i.what == what}
    return {key: by_name[name] for key, name in names.items()}


def _run(params: CleanupDrillsParams) -> tuple[list[CleanupItem], uuid.UUID]:
    state = cleanup_drills(**params_of(params), return_state=True)
    return state.result(), state.state_details.flow_run_id


def _markdown(flow_run_id: uuid.UUID) -> str:
    return "\n".join(a.data or "" for a in artifacts_of(flow_run_id) if a.key == "cleanup-drills")


# -- MongoDB -----------------------------------------------------------------------------------


def _mongo_leftover(conn: MongoConnection, name: str, created_at: datetime | None) -> None:
    """A database as a crashed drill leaves it (marker as restore-drill-mongodb writes it)."""
    with conn.client() as client:
        db = client[name]
        if created_at is not None:
            db[MARKER_COLLECTION].insert_one(
                {
                    "drill_run": f"run-{name}",
                    "source": "vibebench",
                    "backup_id": "20260101T020000Z-a1b2c3",
                    "created_at": created_at,
                }
            )
        db["orders"].insert_one({"_id": 1, "total": 9.5})


def _mongo_names(conn: MongoConnection) -> set[str]:
    with conn.client() as client:
        return set(client.list_database_names())


def test_mongodb_leftovers_dry_run_then_dropped_marked_and_stale_only(
    mongo_conn: MongoConnection, server_block: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _names()
    ages = {"old": 13, "young": 1, "forced": 1, "unmarked": None}
    for key, hours in ages.items():
        _mongo_leftover(mongo_conn, names[key], None if hours is None else _ago(hours))
    try:
        plan, run_id = _run(
            CleanupDrillsParams(
                drill_server_block=server_block,
                mongo_connection_block=save_block(mongo_conn),
                force_drop=[names["forced"]],
            )
        )
        items = _items(plan, MONGO_ITEM, names)
        assert {k: i.drop for k, i in items.items()} == {
            "old": True,
            "young": False,
            "forced": True,
            "unmarked": False,
        }
        assert "left over by drill run-" in items["old"].reason
        assert "no drill marker" in items["unmarked"].reason
        assert set(names.values()) <= _mongo_names(mongo_conn), "a dry run drops nothing"
        assert f"| mongodb database | {names['old']} | drop (dry run) |" in _markdown(run_id)

        # "" = the embedded default from VIBEOPS_MONGO_*, as the drill flows resolve it
        monkeypatch.setenv("VIBEOPS_MONGO_HOST", mongo_conn.host)
        monkeypatch.setenv("VIBEOPS_MONGO_PORT", str(mongo_conn.port))
        monkeypatch.setenv("VIBEOPS_MONGO_USER", mongo_conn.username)
        monkeypatch.setenv("VIBEOPS_MONGO_PASSWORD", mongo_conn.password.get_secret_value())
        plan, run_id = _run(
            CleanupDrillsParams(
                drill_server_block=server_block,
                mongo_connection_block="",
                force_drop=[names["forced"]],
                dry_run=False,
            )
        )
        left = _mongo_names(mongo_conn)
        assert names["old"] not in left and names["forced"] not in left
        assert names["young"] in left and names["unmarked"] in left
        payload = events_of("vibeops.drill.cleanup", run_id)[0]["payload"]
        assert {names["old"], names["forced"]} <= set(payload["dropped"])
        assert names["young"] not in payload["dropped"]
        assert {
            "what": MONGO_ITEM,
            "name": names["unmarked"],
            "drop": False,
            "reason": items["unmarked"].reason,
        } in payload["items"]
    finally:
        with mongo_conn.client() as client:
            for name in names.values():
                client.drop_database(name)


def test_mongodb_drop_leaves_a_database_a_new_drill_took_over(mongo_conn: MongoConnection) -> None:
    name = _names()["old"]
    _mongo_leftover(mongo_conn, name, _ago(20))
    try:
        planned = read_mongo_drill_markers(mongo_conn)[name]
        assert planned is not None and planned.drill_run == f"run-{name}"
        with mongo_conn.client() as client:  # a new drill recreated it since the plan
            client[name].drop_collection(MARKER_COLLECTION)
            client[name][MARKER_COLLECTION].insert_one(
                {"drill_run": "newer", "created_at": datetime.now(UTC)}
            )
        assert drop_drill_database(mongo_conn, name, planned) is False
        assert name in _mongo_names(mongo_conn)
        current = read_mongo_drill_markers(mongo_conn)[name]
        assert current is not None
        assert drop_drill_database(mongo_conn, name, current) is True
        assert name not in _mongo_names(mongo_conn)
    finally:
        with mongo_conn.client() as client:
            client.drop_database(name)


# -- InfluxDB ----------------------------------------------------------------------------------


def _influx_conn(server: InfluxStandIn) -> InfluxConnection:
    return InfluxConnection(url=server.url, org=server.org, token=server.token, timeout_seconds=5)


def _marker(name: str, created_at: datetime) -> DrillMarker:
    return DrillMarker(f"run-{name}", "vibebench-metrics", "20260101T020000Z-a1b2c3", created_at)


def _bucket_names(server: InfluxStandIn) -> set[str]:
    with server.lock:
        return {b["name"] for b in server.buckets.values()}


def test_influxdb_leftovers_dry_run_then_deleted_marked_and_stale_only(
    influx_server: InfluxStandIn, server_block: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = _influx_conn(influx_server)
    names = _names()
    other = names["unmarked"] + "_desc"
    with InfluxSession(conn) as session:
        session.create_bucket(names["old"], drill_bucket_description(_marker("o", _ago(13))))
        session.create_bucket(names["young"], drill_bucket_description(_marker("y", _ago(1))))
        session.create_bucket(names["forced"], drill_bucket_description(_marker("f", _ago(1))))
        session.create_bucket(names["unmarked"])  # as a drill created it before the marker
        session.create_bucket(other, description="team scratch, do not delete")
    try:
        markers = read_influx_drill_markers(conn)
        assert markers[names["unmarked"]] is None and markers[other] is None
        old = markers[names["old"]]
        assert old is not None and old.drill_run == "run-o" and old.created_at < _ago(12)

        plan, run_id = _run(
            CleanupDrillsParams(
                drill_server_block=server_block,
                influx_connection_block=save_block(conn),
                force_drop=[names["forced"], other],
            )
        )
        items = _items(plan, INFLUX_ITEM, {**names, "other": other})
        assert {k: i.drop for k, i in items.items()} == {
            "old": True,
            "young": False,
            "forced": True,
            "unmarked": False,
            "other": False,
        }
        assert set(names.values()) | {other} <= _bucket_names(influx_server), "dry run"
        assert f"| influxdb bucket | {names['old']} | drop (dry run) |" in _markdown(run_id)

        monkeypatch.setenv("VIBEOPS_INFLUX_URL", conn.url)
        monkeypatch.setenv("VIBEOPS_INFLUX_ORG", conn.org)
        monkeypatch.setenv("VIBEOPS_INFLUX_TOKEN", conn.token.get_secret_value())
        plan, run_id = _run(
            CleanupDrillsParams(
                drill_server_block=server_block,
                influx_connection_block="",
                force_drop=[names["forced"], other],
                dry_run=False,
            )
        )
        left = _bucket_names(influx_server)
        assert names["old"] not in left and names["forced"] not in left
        assert {names["young"], names["unmarked"], other} <= left
        payload = events_of("vibeops.drill.cleanup", run_id)[0]["payload"]
        assert {names["old"], names["forced"]} <= set(payload["dropped"])
        assert any(i["what"] == INFLUX_ITEM and i["name"] == other for i in payload["items"])
    finally:
        with InfluxSession(conn) as session:
            for name in [*names.values(), other]:
                session.delete_bucket(name)


def test_influxdb_delete_leaves_a_bucket_a_new_drill_took_over(
    influx_server: InfluxStandIn,
) -> None:
    conn = _influx_conn(influx_server)
    name = _names()["old"]
    planned = _marker("old", _ago(20))
    with InfluxSession(conn) as session:
        session.create_bucket(name, drill_bucket_description(_marker("new", _ago(0))))
    try:
        assert delete_drill_bucket(conn, name, planned) is False
        assert name in _bucket_names(influx_server)
    finally:
        with InfluxSession(conn) as session:
            session.delete_bucket(name)


def test_bucket_description_marker_round_trips_and_rejects_others() -> None:
    marker = _marker("x", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert parse_drill_bucket_description(drill_bucket_description(marker)) == marker
    for text in (None, "", "metrics of team a", "vibeops-drill {not json", "vibeops-drill {}"):
        assert parse_drill_bucket_description(text) is None


# -- opt-in ------------------------------------------------------------------------------------


def test_stores_left_unset_are_never_contacted(
    server_block: str, influx_server: InfluxStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()
    monkeypatch.setenv("VIBEOPS_MONGO_PORT", str(closed))
    monkeypatch.setenv("VIBEOPS_INFLUX_URL", f"http://127.0.0.1:{closed}")
    seen = len(influx_server.requests)
    plan, _ = _run(CleanupDrillsParams(drill_server_block=server_block))
    assert not [i for i in plan if i.what in (MONGO_ITEM, INFLUX_ITEM)]
    assert len(influx_server.requests) == seen

    state = cleanup_drills(
        **params_of(
            CleanupDrillsParams(drill_server_block=server_block, influx_connection_block="")
        ),
        return_state=True,
    )
    with pytest.raises(DatabaseUnreachable, match=f"127.0.0.1:{closed}"):
        state.result()
