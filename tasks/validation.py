"""Validating a restored scratch target against its backup manifest.

Three layers:
1. Parity: every table's exact row count and `CHECKSUM TABLE` against the values the backup
   recorded at its consistent point.
2. Objects: the restored copy's catalog (tasks.mysql_objects) against the manifest's, object
   by object (tasks.object_diff): definitions, sql_mode, collations, trigger order, ...
3. A great-expectations suite (ephemeral context, SQL data source `mysql+pymysql://`) defined
   as data in `deployments/expectations/*.yaml`, which operators extend without code.
   Expensive expectation types only run on tables at most `expensive.max_rows` rows big.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field, ValidationError, field_validator

from blocks.mysql import MySQLConnection
from tasks.backup import retry_transient
from tasks.drill import MARKER_TABLE, RestoredTable, TableParity, compare_tables
from tasks.errors import ConfigurationError
from tasks.manifest import BackupManifest
from tasks.mysql import connect, table_checksums, table_row_counts
from tasks.mysql_objects import read_object_catalog
from tasks.object_diff import ObjectDifference, compare_catalogs, unchecked_kinds

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXPECTATIONS = "deployments/expectations/mysql.yaml"
MANIFEST_ROWS = "$manifest_rows"
ALL_TABLES = "*"
DEFAULT_EXPENSIVE = [
    "expect_column_values_to_be_unique",
    "expect_compound_columns_to_be_unique",
    "expect_select_column_values_to_be_unique_within_record",
    "expect_column_distinct_values_to_be_in_set",
    "expect_column_distinct_values_to_contain_set",
    "expect_column_distinct_values_to_equal_set",
    "expect_column_unique_value_count_to_be_between",
    "expect_column_proportion_of_unique_values_to_be_between",
    "expect_column_median_to_be_between",
    "expect_column_quantile_values_to_be_between",
    "expect_column_kl_divergence_to_be_less_than",
    "expect_column_most_common_value_to_be_in_set",
]


# -- the suite as data -------------------------------------------------------------------------


def _class_name(snake_or_camel: str) -> str:
    if "_" not in snake_or_camel:
        return snake_or_camel
    return "".join(part.capitalize() for part in snake_or_camel.split("_"))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if "_" not in name else name


class ExpectationSpec(BaseModel):
    """One expectation on one table: a great-expectations type and its arguments."""

    type: str = Field(description="e.g. expect_column_values_to_not_be_null")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    max_rows: int | None = Field(default=None, ge=0, description="Skip on bigger tables.")

    @field_validator("type")
    @classmethod
    def _snake_type(cls, value: str) -> str:
        return _snake(value)


class ExpensiveRule(BaseModel):
    """Which expectation types are expensive, and the table size they stop at."""

    max_rows: int = Field(default=200_000, ge=0)
    types: list[str] = Field(default_factory=lambda: list(DEFAULT_EXPENSIVE))


class ExpectationSuiteSpec(BaseModel):
    """The drill's suite: expectations per table (`*`: every table of the backup)."""

    version: int = 1
    expensive: ExpensiveRule = Field(default_factory=ExpensiveRule)
    tables: dict[str, list[ExpectationSpec]] = Field(default_factory=dict)

    def for_table(self, table: str) -> list[ExpectationSpec]:
        return [*self.tables.get(ALL_TABLES, []), *self.tables.get(table, [])]

    def row_limit(self, spec: ExpectationSpec) -> int | None:
        if spec.max_rows is not None:
            return spec.max_rows
        return self.expensive.max_rows if spec.type in self.expensive.types else None


def resolve_expectations_path(path: str) -> Path:
    """An absolute path, or one relative to the project folder."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate


def load_expectations(path: str = DEFAULT_EXPECTATIONS) -> ExpectationSuiteSpec:
    """Read and check a suite file; ConfigurationError names the file and the bad entry."""
    file = resolve_expectations_path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        suite = ExpectationSuiteSpec.model_validate(data)
    except FileNotFoundError:
        raise ConfigurationError(
            f"expectations_file {path!r}: {file} does not exist; point it at a YAML suite such "
            f"as {DEFAULT_EXPECTATIONS}"
        ) from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(f"expectations_file {file} is not a valid suite: {exc}") from exc
    import great_expectations.expectations as gxe

    for table, specs in suite.tables.items():
        for spec in specs:
            if not hasattr(gxe, _class_name(spec.type)):
                raise ConfigurationError(
                    f"expectations_file {file}: table {table!r}: {spec.type!r} is not a "
                    "great-expectations expectation (see great_expectations.expectations)"
                )
    return suite


# -- parity ------------------------------------------------------------------------------------


def restored_tables(conn: MySQLConnection, database: str) -> list[str]:
    """Base tables of the scratch database, without the drill's marker table."""
    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = %s AND table_type = 'BASE TABLE' ORDER BY table_name",
            (database,),
        )
        return [str(r[0]) for r in cur.fetchall() if str(r[0]) != MARKER_TABLE]


def inspect_restored(
    conn: MySQLConnection, database: str, with_checksums: bool, parallel: int = 2
) -> dict[str, RestoredTable]:
    """Exact row counts (and CHECKSUM TABLE) of every restored table, `parallel` at a time."""
    tables = restored_tables(conn, database)

    def facts(table: str) -> tuple[str, RestoredTable]:
        rows = table_row_counts(conn, database, [table])[table]
        checksum = table_checksums(conn, database, [table])[table] if with_checksums else None
        return table, RestoredTable(rows=rows, checksum=checksum)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return dict(pool.map(facts, tables))


NO_CATALOG = (
    "this backup's manifest records no object catalog (taken before catalogs were recorded): "
    "only table rows/checksums and view/routine names were checked; triggers, events, "
    "sequences, definitions, sql_mode, collations and AUTO_INCREMENT were not"
)


@dataclass
class ObjectCheck:
    """The restored copy's objects against the backup's catalog."""

    differences: list[ObjectDifference] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_objects(conn: MySQLConnection, database: str, manifest: BackupManifest) -> ObjectCheck:
    """Compare every object of the restored `database` with the manifest's catalog.

    Old manifests without a catalog: views and routines by name only, and say so.
    """
    if manifest.catalog is None:
        problems = missing_objects(conn, database, manifest)
        return ObjectCheck(unchecked=[NO_CATALOG], problems=problems)
    restored = read_object_catalog(conn, database, ignore_tables=[MARKER_TABLE])
    differences = compare_catalogs(manifest.catalog, restored, manifest.database)
    return ObjectCheck(
        differences=differences,
        checked=manifest.catalog.counts(),
        unchecked=unchecked_kinds(manifest.catalog, restored),
        problems=[d.message for d in differences],
    )


def missing_objects(conn: MySQLConnection, database: str, manifest: BackupManifest) -> list[str]:
    """Views and routines the manifest lists that the restore does not have (old manifests)."""
    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = %s", (database,)
        )
        views = {str(r[0]) for r in cur.fetchall()}
        cur.execute(
            "SELECT routine_name FROM information_schema.routines WHERE routine_schema = %s",
            (database,),
        )
        routines = {str(r[0]) for r in cur.fetchall()}
    problems = [f"view {v} missing after restore" for v in manifest.views if v not in views]
    problems += [
        f"routine {r} missing after restore" for r in manifest.routines if r not in routines
    ]
    return problems


# -- great expectations ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result on one table (`skipped` set when it was not run)."""

    table: str
    expectation: str
    kwargs: dict[str, Any]
    success: bool
    observed: str = ""
    skipped: str | None = None


def _observed(result: Mapping[str, Any] | None, exception_info: Any) -> str:
    if exception_info:
        messages = []
        stack: list[Any] = [exception_info]
        while stack:
            item = stack.pop()
            if isinstance(item, Mapping):
                if item.get("exception_message"):
                    messages.append(str(item["exception_message"]))
                stack.extend(v for v in item.values() if isinstance(v, Mapping))
        if messages:
            return "error: " + messages[0].strip().splitlines()[-1][:200]
    result = result or {}
    if "observed_value" in result:
        return f"observed {result['observed_value']}"
    if "unexpected_count" in result:
        return f"{int(result['unexpected_count'] or 0)} unexpected ({result.get('unexpected_percent') or 0:.3g}%)"
    return ""


def _substitute(kwargs: Mapping[str, Any], manifest_rows: int | None) -> dict[str, Any]:
    return {k: (manifest_rows if v == MANIFEST_ROWS else v) for k, v in kwargs.items()}


def run_expectations(
    conn: MySQLConnection,
    database: str,
    suite: ExpectationSuiteSpec,
    manifest: BackupManifest,
    restored: Mapping[str, RestoredTable],
) -> list[ExpectationOutcome]:
    """Run the suite on the scratch database through a throwaway great-expectations context."""
    outcomes: list[ExpectationOutcome] = []
    planned: dict[str, list[tuple[ExpectationSpec, dict[str, Any]]]] = {}
    for table in sorted(set(manifest.tables) | set(suite.tables) - {ALL_TABLES}):
        specs = suite.for_table(table) if table in manifest.tables else suite.tables.get(table, [])
        for spec in specs:
            facts = manifest.tables.get(table)
            kwargs = _substitute(spec.kwargs, facts.rows if facts else None)
            limit = suite.row_limit(spec)
            if table not in manifest.tables:
                outcomes.append(
                    ExpectationOutcome(
                        table, spec.type, kwargs, True, skipped="table not in this backup"
                    )
                )
            elif table not in restored:
                outcomes.append(
                    ExpectationOutcome(
                        table, spec.type, kwargs, False, "table missing after restore"
                    )
                )
            elif limit is not None and restored[table].rows > limit:
                outcomes.append(
                    ExpectationOutcome(
                        table,
                        spec.type,
                        kwargs,
                        True,
                        skipped=f"expensive: {restored[table].rows:,} rows > max_rows {limit:,}",
                    )
                )
            else:
                planned.setdefault(table, []).append((spec, kwargs))
    if not planned:
        return outcomes
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pymysql
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # The password never enters the URL: connections come from the block through `creator`.
    source = context.data_sources.add_sql(  # type: ignore[call-arg]
        name=f"drill-{database}",
        connection_string=f"mysql+pymysql://{conn.user}@{conn.host}:{conn.port}/{database}",
        kwargs={"creator": lambda: pymysql.connect(**conn.pymysql_kwargs(database))},
    )
    try:
        for table, entries in planned.items():
            asset = source.add_table_asset(name=table, table_name=table)
            batch = asset.add_batch_definition_whole_table(f"{table}-all").get_batch()
            expectation_suite = gx.ExpectationSuite(name=f"drill-{table}")
            for entry, arguments in entries:
                expectation_suite.add_expectation(
                    getattr(gxe, _class_name(entry.type))(**arguments)
                )
            result = batch.validate(expectation_suite)
            for item in result.results:
                config = item.expectation_config
                shown = {
                    k: v for k, v in (config.kwargs if config else {}).items() if k != "batch_id"
                }
                outcomes.append(
                    ExpectationOutcome(
                        table=table,
                        expectation=config.type if config else "?",
                        kwargs=shown,
                        success=bool(item.success),
                        observed=_observed(item.result, item.exception_info),
                    )
                )
    finally:
        with contextlib.suppress(Exception):
            source.get_engine().dispose()
    return outcomes


# -- the task ----------------------------------------------------------------------------------


@dataclass
class ValidationReport:
    """Everything validation found; `problems` is empty when the restore is good."""

    parity: list[TableParity]
    expectations: list[ExpectationOutcome]
    problems: list[str] = field(default_factory=list)
    objects: ObjectCheck = field(default_factory=ObjectCheck)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def failed_expectations(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]


@task(
    cache_policy=NO_CACHE,
    name="validate-restore",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def validate_restore(
    conn: MySQLConnection,
    database: str,
    manifest: BackupManifest,
    suite: ExpectationSuiteSpec,
    parallel: int = 2,
) -> ValidationReport:
    """Row counts + CHECKSUM TABLE parity, every object against the catalog, then the suite."""
    logger = get_run_logger()
    with_checksums = any(facts.checksum is not None for facts in manifest.tables.values())
    restored = inspect_restored(conn, database, with_checksums, parallel)
    parity = compare_tables(manifest.tables, restored)
    problems = [f"table {p.table}: {p.problem}" for p in parity if not p.ok]
    objects = check_objects(conn, database, manifest)
    problems += objects.problems
    expectations = run_expectations(conn, database, suite, manifest, restored)
    problems += [
        f"table {e.table}: {e.expectation}({_args(e.kwargs)}) failed: {e.observed or 'no detail'}"
        for e in expectations
        if not e.success
    ]
    logger.info(
        "validated %s: %d table(s), %d parity problem(s), %d object difference(s), "
        "%d/%d expectation(s) passed, %d skipped",
        database,
        len(parity),
        sum(not p.ok for p in parity),
        len(objects.problems),
        sum(e.success and not e.skipped for e in expectations),
        sum(not e.skipped for e in expectations),
        sum(bool(e.skipped) for e in expectations),
    )
    return ValidationReport(
        parity=parity, expectations=expectations, problems=problems, objects=objects
    )


def _args(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
