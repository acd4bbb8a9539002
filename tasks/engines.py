"""Backup engines for MySQL/MariaDB: which tools an engine needs, and what each costs.

- `mysqldump`: one consistent logical stream (tasks.mysql); works against any server,
  including managed ones without file access (Cloud SQL).
- `mydumper`: parallel, chunked logical dump; restored by `myloader -t N` (tasks.mydumper).
- `physical`: a copy of the data files, `mariadb-backup` for MariaDB and Percona
  `xtrabackup` for MySQL 8, chosen by the server's version; restored by extracting,
  preparing and starting a throwaway server on it (tasks.physical).

Pure apart from looking tools up on PATH; imports nothing from Prefect.
"""

from __future__ import annotations

import re
import shutil
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from tasks.errors import ConfigurationError
from tasks.manifest import Engine

ENGINES: tuple[Engine, ...] = ("mysqldump", "mydumper", "physical")
Flavor = Literal["mariadb", "mysql"]
_SBIN = (Path("/usr/sbin"), Path("/usr/local/sbin"))


def resolve_engine(requested: str, block_default: Engine) -> Engine:
    """The engine a backup uses: the parameter, or the connection block's when it is `default`."""
    if requested in ("", "default"):
        return block_default
    if requested not in ENGINES:
        raise ConfigurationError(
            f"engine {requested!r} is unknown: choose one of {', '.join(ENGINES)} or 'default'"
        )
    return requested  # type: ignore[return-value]


def server_flavor(server_version: str) -> Flavor:
    """`mariadb` or `mysql`, from `SELECT VERSION()` (MariaDB says so in the version)."""
    return "mariadb" if "mariadb" in server_version.lower() else "mysql"


def _major_minor(server_version: str) -> tuple[int, int]:
    match = re.match(r"^(\d+)\.(\d+)", server_version)
    if not match:
        raise ConfigurationError(f"cannot read a version number from {server_version!r}")
    return int(match.group(1)), int(match.group(2))


def which(*names: str, sbin: bool = False) -> str | None:
    """First of `names` on PATH; with `sbin`, also /usr/sbin (server binaries live there)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for folder in _SBIN if sbin else ():
        for name in names:
            if (folder / name).exists():
                return str(folder / name)
    return None


def require(names: tuple[str, ...], package: str, why: str, sbin: bool = False) -> str:
    """Resolve a tool or raise ConfigurationError saying which package installs it."""
    found = which(*names, sbin=sbin)
    if found is None:
        raise ConfigurationError(
            f"{' / '.join(names)} is not installed on this worker ({why}): "
            f"apt-get install -y {package}"
        )
    return found


@dataclass(frozen=True)
class PhysicalTools:
    """The tool set of one server family for physical backups and restores."""

    flavor: Flavor
    tool: Literal["mariadb-backup", "xtrabackup"]
    backup: tuple[str, ...]
    extract: tuple[str, ...]
    server: tuple[str, ...]
    package: str
    server_package: str

    def backup_binary(self) -> str:
        return require(self.backup, self.package, f"engine 'physical' for {self.flavor}")

    def extract_binary(self) -> str:
        return require(self.extract, self.package, f"restoring a {self.tool} stream")

    def server_binary(self) -> str:
        return require(self.server, self.server_package, "the drill's throwaway server", sbin=True)


def physical_tools(flavor: Flavor, server_version: str = "") -> PhysicalTools:
    """mariadb-backup for MariaDB; xtrabackup matching the MySQL version for MySQL."""
    if flavor == "mariadb":
        return PhysicalTools(
            flavor="mariadb",
            tool="mariadb-backup",
            backup=("mariadb-backup", "mariabackup"),
            extract=("mbstream",),
            server=("mariadbd", "mysqld"),
            package="mariadb-backup",
            server_package="mariadb-server",
        )
    major, minor = _major_minor(server_version) if server_version else (8, 0)
    if major < 8:
        package = "percona-xtrabackup-24"
    elif (major, minor) == (8, 0):
        package = "percona-xtrabackup-80"
    else:
        package = f"percona-xtrabackup-{major}{minor}"
    return PhysicalTools(
        flavor="mysql",
        tool="xtrabackup",
        backup=("xtrabackup",),
        extract=("xbstream",),
        server=("mysqld",),
        package=package,
        server_package="mysql-server",
    )


def mydumper_binary() -> str:
    return require(("mydumper",), "mydumper", "engine 'mydumper'")


def myloader_binary() -> str:
    return require(("myloader",), "mydumper", "restoring a mydumper backup")


def check_engine_tools(engine: Engine, server_version: str) -> list[str]:
    """Every tool the engine's backup needs, resolved; ConfigurationError names the package."""
    if engine == "mydumper":
        return [mydumper_binary()]
    if engine == "physical":
        return [physical_tools(server_flavor(server_version), server_version).backup_binary()]
    return [require(("mariadb-dump", "mysqldump"), "mariadb-client", "engine 'mysqldump'")]


# -- what each engine costs: RTO per engine from the drill history -----------------------------


class _Record(Protocol):
    """The fields of tasks.drill.DrillRecord this module reads."""

    @property
    def engine(self) -> str | None: ...
    @property
    def rto_seconds(self) -> float | None: ...
    @property
    def passed(self) -> bool: ...
    @property
    def rows(self) -> int | None: ...


@dataclass(frozen=True)
class EngineRto:
    """Recovery times measured by drills of one engine's backups."""

    engine: str
    drills: int
    passed: int
    last_rto_s: float | None
    median_rto_s: float | None
    best_rto_s: float | None
    rows: int | None


def rto_by_engine(records: Iterable[_Record]) -> list[EngineRto]:
    """Per engine (oldest records first in, any order): drills, passes, last/median/best RTO."""
    grouped: dict[str, list[_Record]] = {}
    for record in records:
        grouped.setdefault(record.engine or "mysqldump", []).append(record)
    result = []
    order = [e for e in ENGINES if e in grouped] + sorted(set(grouped) - set(ENGINES))
    for engine in order:
        items = grouped[engine]
        rtos = [r.rto_seconds for r in items if r.rto_seconds is not None]
        result.append(
            EngineRto(
                engine=engine,
                drills=len(items),
                passed=sum(r.passed for r in items),
                last_rto_s=rtos[-1] if rtos else None,
                median_rto_s=statistics.median(rtos) if rtos else None,
                best_rto_s=min(rtos) if rtos else None,
                rows=items[-1].rows,
            )
        )
    return result


def engine_rto_lines(rows: list[EngineRto]) -> list[str]:
    """A Markdown table of RTO per engine (for the drill report)."""
    if not rows:
        return []

    def secs(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    lines = [
        "## RTO by engine (drill history of this source)",
        "",
        "| engine | drills | passed | last RTO s | median RTO s | best RTO s | rows (last) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.engine} | {r.drills} | {r.passed} | {secs(r.last_rto_s)} | "
        f"{secs(r.median_rto_s)} | {secs(r.best_rto_s)} | "
        f"{f'{r.rows:,}' if r.rows is not None else '-'} |"
        for r in rows
    ]
    return [*lines, ""]
