"""Reports read at 1366 px: the important columns first, long values in full below the table,
every state a word (readable without an emoji font)."""

from __future__ import annotations

from tasks.retention import RuleOutcome, outcomes_markdown


def test_retention_report_puts_status_and_why_first_and_long_errors_below() -> None:
    error = "RetentionRefused: " + "the backup catalog of region-b is partly unreadable " * 4
    report = outcomes_markdown(
        "seed",
        [
            RuleOutcome(rule="raw-runs", status="ok", rows_deleted=12),
            RuleOutcome(rule="mysql-backups", status="refused", error=error),
        ],
        dry_run=False,
    )
    header = next(line for line in report.splitlines() if line.startswith("| rule"))
    assert header.startswith("| rule | status | why |")
    row = next(line for line in report.splitlines() if line.startswith("| mysql-backups"))
    assert "REFUSED" in row and len(row) < 160
    assert error in report.split("**In full**", 1)[1], "the full reason follows the table"
    assert "| raw-runs | done ✅ | - | 12 |" in report


def test_a_dry_run_says_so_in_words() -> None:
    report = outcomes_markdown("seed", [RuleOutcome(rule="logs", status="dry-run")], dry_run=True)
    assert "dry run (nothing changed)" in report
    assert "| logs | dry run |" in report
