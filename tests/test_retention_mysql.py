"""MySQL purge tasks against the private MariaDB: schema checks, counts, chunked purge, resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from blocks import MySQLConnection
from tasks.errors import RetentionPolicyInvalid
from tasks.mysql_purge import check_table_rules, count_expired_rows, purge_expired_rows
from tests.fixtures.mysql import run_sql

pytestmark = pytest.mark.mysql

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=30)


def make_rows(conn: MySQLConnection, db: str, table: str = "experiments", pk: bool = True) -> int:
    """One row every 2 hours over 120 days before NOW (1440 rows); returns how many are old."""
    key = "id BIGINT AUTO_INCREMENT PRIMARY KEY," if pk else "id BIGINT NOT NULL,"
    run_sql(
        conn,
        f"CREATE TABLE {table} ({key} created_at DATETIME(6) NOT NULL, "
        "payload VARCHAR(200) NOT NULL) ENGINE=InnoDB",
        db,
    )
    start = (NOW - timedelta(days=120)).replace(tzinfo=None)
    run_sql(
        conn,
        f"INSERT INTO {table} (id, created_at, payload) SELECT seq, "
        f"TIMESTAMP'{start:%Y-%m-%d %H:%M:%S}' + INTERVAL (seq - 1) * 2 HOUR + INTERVAL 1 MINUTE, "
        "RPAD(MD5(seq), 200, 'x') FROM seq_1_to_1440",
        db,
    )
    return sum(
        1
        for k in range(1440)
        if NOW - timedelta(days=120) + timedelta(hours=2 * k, minutes=1) < CUTOFF
    )


def count(conn: MySQLConnection, db: str, where: str = "1", table: str = "experiments") -> int:
    return int(run_sql(conn, f"SELECT COUNT(*) FROM {table} WHERE {where}", db)[0][0])


def test_schema_check_names_every_unknown_table_and_column(mysql_root, fresh_database):
    make_rows(mysql_root, fresh_database)
    run_sql(
        mysql_root, "CREATE TABLE notes (id INT PRIMARY KEY, label VARCHAR(10))", fresh_database
    )
    with pytest.raises(RetentionPolicyInvalid) as info:
        check_table_rules(
            mysql_root,
            [
                ("a", fresh_database, "experimentz", "created_at"),
                ("b", fresh_database, "experiments", "createdat"),
                ("c", fresh_database, "notes", "label"),
                ("d", "no_such_db", "experiments", "created_at"),
            ],
        )
    message = str(info.value)
    assert f"rule 'a': table {fresh_database}.experimentz does not exist" in message
    assert "rule 'b': column 'createdat' does not exist" in message and "created_at" in message
    assert "rule 'c'" in message and "is varchar, not a DATE/DATETIME/TIMESTAMP" in message
    assert "rule 'd': table no_such_db.experiments does not exist" in message
    shapes = check_table_rules(mysql_root, [("ok", fresh_database, "experiments", "CREATED_AT")])
    assert shapes["ok"].pk_column == "id" and shapes["ok"].time_column == "created_at"


def test_count_and_chunked_purge_delete_exactly_the_old_rows(mysql_root, fresh_database):
    old = make_rows(mysql_root, fresh_database)
    assert old == 1080
    shape = check_table_rules(mysql_root, [("r", fresh_database, "experiments", "created_at")])["r"]
    facts = count_expired_rows.fn(mysql_root, shape, CUTOFF)
    assert (facts.matching_rows, facts.total_rows) == (old, 1440)
    assert (facts.min_pk, facts.max_pk) == (1, old)
    progress = []
    result = purge_expired_rows.fn(
        mysql_root,
        shape,
        CUTOFF,
        from_pk=facts.min_pk,
        upto_pk=facts.max_pk,
        chunk_rows=100,
        pause_seconds=0,
        on_progress=progress.append,
    )
    assert result.finished and result.deleted == old and result.chunks == 11
    assert [p.deleted for p in progress][-1] == old and progress[-1].fraction == 1.0
    assert count(mysql_root, fresh_database) == 1440 - old
    assert count(mysql_root, fresh_database, f"created_at < '{CUTOFF:%Y-%m-%d %H:%M:%S}'") == 0
    again = purge_expired_rows.fn(mysql_root, shape, CUTOFF, chunk_rows=100, pause_seconds=0)
    assert again.finished and again.deleted == 0


def test_purge_stops_cleanly_and_resumes_from_its_cursor(mysql_root, fresh_database):
    old = make_rows(mysql_root, fresh_database)
    shape = check_table_rules(mysql_root, [("r", fresh_database, "experiments", "created_at")])["r"]
    chunks = []
    first = purge_expired_rows.fn(
        mysql_root,
        shape,
        CUTOFF,
        chunk_rows=200,
        pause_seconds=0,
        on_progress=chunks.append,
        should_stop=lambda: len(chunks) >= 2,
    )
    assert not first.finished and first.deleted == 400 and first.cursor == 400
    assert count(mysql_root, fresh_database) == 1440 - 400
    resumed = purge_expired_rows.fn(
        mysql_root, shape, CUTOFF, from_pk=first.cursor + 1, chunk_rows=200, pause_seconds=0
    )
    assert resumed.finished and resumed.deleted == old - 400
    assert count(mysql_root, fresh_database) == 1440 - old


def test_rows_interleaved_with_new_ones_and_tables_without_a_primary_key(
    mysql_root, fresh_database
):
    old = make_rows(mysql_root, fresh_database, "events", pk=False)
    # A young row in the middle of the old key range must survive the purge.
    run_sql(mysql_root, "UPDATE events SET created_at = NOW() WHERE id = 500", fresh_database)
    shape = check_table_rules(mysql_root, [("e", fresh_database, "events", "created_at")])["e"]
    assert shape.pk_column is None
    result = purge_expired_rows.fn(mysql_root, shape, CUTOFF, chunk_rows=300, pause_seconds=0)
    assert result.finished and result.deleted == old - 1
    assert count(mysql_root, fresh_database, "id = 500", "events") == 1

    old = make_rows(mysql_root, fresh_database, "runs")
    run_sql(mysql_root, "UPDATE runs SET created_at = NOW() WHERE id = 700", fresh_database)
    shape = check_table_rules(mysql_root, [("r", fresh_database, "runs", "created_at")])["r"]
    result = purge_expired_rows.fn(mysql_root, shape, CUTOFF, chunk_rows=250, pause_seconds=0)
    assert result.deleted == old - 1 and count(mysql_root, fresh_database, "id = 700", "runs") == 1
