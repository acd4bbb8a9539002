"""`vibeops backups`: the catalog's entries as rows, whatever state an entry carries.

Ids are never shortened. On a terminal the rows are a table whose long cells fold (never an
ellipsis); elsewhere each entry is one tab-separated line, never wrapped.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

COLUMNS = ("region", "backup_id", "state", "age", "consistent_at", "rows", "size_mb", "detail")


def _age_seconds(entry: Any, now: datetime) -> float | None:
    age = getattr(entry, "age", None)
    if callable(age):  # BackupEntry.age(now): since its last write, unfinished uploads included
        age = age(now)
    if isinstance(age, timedelta):
        return age.total_seconds()
    if isinstance(age, int | float):
        return float(age)
    times = [obj.updated for obj in getattr(entry, "objects", []) if obj.updated is not None]
    return (now - max(times)).total_seconds() if times else None


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def entry_row(entry: Any, now: datetime | None = None) -> dict[str, Any]:
    """One catalog entry as a JSON-ready row: committed, or the catalog's own description
    of an incomplete entry (unfinished uploads, no manifest, unreadable manifest)."""
    from tasks.backup_debris import incomplete_state

    now = now or datetime.now(UTC)
    manifest = entry.manifest
    detail = "" if manifest else incomplete_state(entry, now)
    age = _age_seconds(entry, now)
    partials = getattr(entry, "partials", [])
    return {
        "region": entry.region,
        "backup_id": entry.backup_id,
        "state": "committed" if manifest else detail.split(" (", 1)[0].split(":", 1)[0],
        "age_seconds": None if age is None else round(age, 1),
        "consistent_at": manifest.consistent_at.isoformat() if manifest else None,
        "rows": manifest.total_rows if manifest else None,
        "size_bytes": entry.total_size + sum(p.size for p in partials),
        "unfinished_uploads": [p.key for p in partials],
        "prefix": entry.prefix,
        "detail": detail,
    }


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        row["region"],
        row["backup_id"],
        row["state"],
        _age_text(row["age_seconds"]),
        row["consistent_at"] or "-",
        "-" if row["rows"] is None else f"{row['rows']:,}",
        f"{row['size_bytes'] / 1e6:.1f}",
        row["detail"] or "",
    ]


def render_rows(rows: list[dict[str, Any]]) -> None:
    """Print the rows: a folding table on a terminal, one tab-separated line each elsewhere."""
    if not sys.stdout.isatty():
        print("\t".join(COLUMNS))
        for row in rows:
            print("\t".join(_cells(row)))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS)
    for column in table.columns:
        column.overflow = "fold"
    table.columns[1].no_wrap = True
    table.columns[1].min_width = max((len(r["backup_id"]) for r in rows), default=9)
    for row in rows:
        cells = _cells(row)
        if row["state"] != "committed":
            cells[2] = f"[red]{cells[2]}[/]"
        table.add_row(*cells)
    Console().print(table)
