"""A sample VibeBench database: the tables the runbooks care about, with realistic shapes.

Used by the embedded-defaults main job, the benchmarks and the tests. The `experiments`
table matches the reference shape (id, ai_model, task_id, created_at, score, ~500-byte
payload); binary, emoji, NULL, a view, a trigger and a procedure cover the dump edge cases.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from blocks.mysql import MySQLConnection
from tasks.mysql import connect, one_row, quote_composed_name

AI_MODELS = ["gpt-5", "claude-4", "gemini-3", "llama-4", "mistral-l", "qwen-3"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS ai_models (
        id INT PRIMARY KEY AUTO_INCREMENT,
        name VARCHAR(64) NOT NULL UNIQUE,
        vendor VARCHAR(64) NOT NULL,
        logo BLOB NULL
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS experiments (
        id BIGINT PRIMARY KEY AUTO_INCREMENT,
        ai_model VARCHAR(64) NOT NULL,
        task_id INT NOT NULL,
        created_at DATETIME(6) NOT NULL,
        score DOUBLE NULL,
        payload TEXT NOT NULL,
        KEY idx_created_at (created_at)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS audit_log (
        id BIGINT PRIMARY KEY AUTO_INCREMENT,
        actor VARCHAR(64) NOT NULL,
        action VARCHAR(128) NOT NULL,
        created_at DATETIME(6) NOT NULL,
        KEY idx_created_at (created_at)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS experiment_totals (
        ai_model VARCHAR(64) PRIMARY KEY,
        runs BIGINT NOT NULL DEFAULT 0
    ) ENGINE=InnoDB""",
    """CREATE OR REPLACE VIEW model_scores AS
        SELECT ai_model, COUNT(*) AS runs, AVG(score) AS avg_score
        FROM experiments GROUP BY ai_model""",
    "DROP TRIGGER IF EXISTS experiments_count",
    """CREATE TRIGGER experiments_count AFTER INSERT ON experiments FOR EACH ROW
        INSERT INTO experiment_totals (ai_model, runs) VALUES (NEW.ai_model, 1)
        ON DUPLICATE KEY UPDATE runs = runs + 1""",
    "DROP PROCEDURE IF EXISTS top_models",
    """CREATE PROCEDURE top_models(IN how_many INT)
        SELECT ai_model, avg_score FROM model_scores ORDER BY avg_score DESC LIMIT how_many""",
]


def create_database(conn: MySQLConnection, database: str, drop_first: bool = False) -> None:
    """Create `database` (utf8mb4) with the sample schema."""
    quoted = quote_composed_name(database, "sample database")
    with connect(conn) as connection, connection.cursor() as cur:
        if drop_first:
            cur.execute(f"DROP DATABASE IF EXISTS {quoted}")
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {quoted} CHARACTER SET utf8mb4")
    with connect(conn, database) as connection, connection.cursor() as cur:
        for statement in SCHEMA:
            cur.execute(statement)


def seed_reference_rows(conn: MySQLConnection, database: str) -> None:
    """Models with binary logos and audit rows with emoji and NULL-heavy edge cases."""
    with connect(conn, database) as connection, connection.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM ai_models")
        if one_row(cur)[0]:
            return
        cur.executemany(
            "INSERT INTO ai_models (name, vendor, logo) VALUES (%s, %s, %s)",
            [
                (name, f"vendor-{i}", bytes(range(256)) * (i + 1) if i % 2 == 0 else None)
                for i, name in enumerate(AI_MODELS)
            ],
        )
        now = datetime.now(UTC).replace(tzinfo=None)
        cur.executemany(
            "INSERT INTO audit_log (actor, action, created_at) VALUES (%s, %s, %s)",
            [
                ("ops-bot 🤖", "backup ✅ 'quoted' \"double\" \\ back\\slash", now),
                ("alice", "login", now - timedelta(days=400)),
                ("bob", "deploy 🚀", now - timedelta(days=3000)),
            ],
        )


def experiment_rows(
    count: int, start_id: int, now: datetime, days: int, rng: random.Random
) -> list[tuple]:
    """`count` experiments rows spread evenly over the last `days` days."""
    filler = "x" * 440
    rows = []
    span = timedelta(days=days).total_seconds()
    for offset in range(count):
        row_id = start_id + offset
        created = now - timedelta(seconds=span * (1 - (offset + 0.5) / max(count, 1)))
        score = None if row_id % 97 == 0 else round(rng.random() * 100, 3)
        payload = f'{{"run":{row_id},"prompt":"task {row_id % 500} — ünïcødé 🧪","pad":"{filler}"}}'
        rows.append(
            (row_id, AI_MODELS[row_id % len(AI_MODELS)], row_id % 500, created, score, payload)
        )
    return rows


def seed_experiments(
    conn: MySQLConnection,
    database: str,
    rows: int,
    days: int = 120,
    now: datetime | None = None,
    batch: int = 5000,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Insert `rows` experiments spread over `days` days (idempotent: tops up to `rows`)."""
    now = (now or datetime.now(UTC)).replace(tzinfo=None)
    rng = random.Random(42)  # noqa: S311 (sample data, not crypto)
    with connect(conn, database, autocommit=False) as connection, connection.cursor() as cur:
        cur.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM experiments")
        existing, max_id = one_row(cur)
        missing = rows - int(existing)
        done = 0
        while done < missing:
            size = min(batch, missing - done)
            cur.executemany(
                "INSERT INTO experiments (id, ai_model, task_id, created_at, score, payload)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                experiment_rows(size, int(max_id) + done + 1, now, days, rng),
            )
            connection.commit()
            done += size
            if on_progress is not None:
                on_progress(done)
    return max(missing, 0)


def create_sample_database(
    conn: MySQLConnection,
    database: str = "vibebench",
    rows: int = 10_000,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Schema, reference rows and `rows` experiments; returns how many rows were added."""
    create_database(conn, database)
    seed_reference_rows(conn, database)
    return seed_experiments(conn, database, rows, on_progress=on_progress)


def fill_experiments_server_side(
    conn: MySQLConnection, database: str, rows: int, batch: int = 100_000
) -> None:
    """Fresh sample database whose `experiments` has `rows` rows generated by the server.

    MariaDB's sequence engine (`seq_1_to_N`) makes the rows server-side, several times
    faster than client inserts; the ~500-byte payload is mostly hex, so it compresses
    about as well as real benchmark JSON (~3.5x with zstd -3).
    """
    create_database(conn, database, drop_first=True)
    seed_reference_rows(conn, database)
    models = ", ".join(f"'{m}'" for m in AI_MODELS)
    with connect(conn, database) as connection, connection.cursor() as cur:
        cur.execute("DROP TRIGGER IF EXISTS experiments_count")
        for start in range(1, rows + 1, batch):
            end = min(rows, start + batch - 1)
            cur.execute(
                "INSERT INTO experiments (id, ai_model, task_id, created_at, score, payload)"
                f" SELECT seq, ELT(1 + seq % {len(AI_MODELS)}, {models}), seq % 500,"
                " TIMESTAMP('2025-01-01') + INTERVAL seq SECOND,"
                " IF(seq % 97 = 0, NULL, ROUND(RAND(seq) * 100, 3)),"
                ' CONCAT(\'{"run":\', seq, \',"prompt":"task \', seq % 500, \' — ünïcødé","pad":"\','
                " MD5(seq), SHA2(seq, 512), SHA2(seq * 7, 512), SHA2(seq * 13, 512),"
                " SHA2(seq * 17, 256), '\"}')"
                f" FROM seq_{start}_to_{end}"
            )
        cur.execute(
            "INSERT INTO experiment_totals (ai_model, runs)"
            " SELECT ai_model, COUNT(*) FROM experiments GROUP BY ai_model"
        )
        cur.execute(SCHEMA[6])  # the trigger again, now that the bulk rows are in


def write_audit_rows(conn: MySQLConnection, database: str, count: int, actor: str = "demo") -> None:
    """`count` audit_log rows stamped now: writes after a backup, for point-in-time demos."""
    quote_composed_name(database, "sample database")
    now = datetime.now(UTC)
    with connect(conn, database) as connection, connection.cursor() as cur:
        for number in range(count):
            cur.execute(
                "INSERT INTO audit_log (actor, action, created_at) VALUES (%s, %s, %s)",
                (actor, f"write {number + 1} after the base backup", now),
            )
