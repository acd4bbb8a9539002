"""The object catalog of a MySQL database and its comparison (pure: no I/O, no Prefect).

A backup records the catalog of its database (tasks.mysql_objects reads it); a drill reads
the catalog of the restored copy and `compare_catalogs` names every difference. Definitions
are normalised before they are digested, so that the same object restored into a scratch
database of another name digests the same:

- the DEFINER clause is dropped (recorded on its own; a restore server may lack the user);
- `AUTO_INCREMENT=N` is dropped from SHOW CREATE TABLE (recorded and compared on its own);
- the `db`. qualifier of the object's own database is dropped from tables and views (the
  server writes it itself); stored-program bodies are kept verbatim, as their author wrote them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

ObjectKind = Literal["table", "view", "trigger", "procedure", "function", "event", "sequence"]
OBJECT_KINDS: tuple[ObjectKind, ...] = (
    "table",
    "view",
    "trigger",
    "procedure",
    "function",
    "event",
    "sequence",
)
# A backquoted or plain user, then an optional @host: DEFINER=`a``b`@`%` / DEFINER=CURRENT_USER.
_QUOTED = r"(?:`(?:[^`]|``)*`|'(?:[^']|'')*'|[^\s@`']+)"
_DEFINER = re.compile(rf"\bDEFINER\s*=\s*{_QUOTED}(?:\s*@\s*{_QUOTED})?\s+", re.IGNORECASE)
_AUTO_INCREMENT_OPTION = re.compile(r"\s+AUTO_INCREMENT=\d+\b")


def backquote(name: str) -> str:
    """`name` with backticks doubled, the way the server writes identifiers."""
    return "`" + name.replace("`", "``") + "`"


# -- the catalog (stored in the manifest) ------------------------------------------------------


class TableShape(BaseModel):
    """What a base table (or system-versioned table) is, apart from its rows."""

    engine: str | None = None
    row_format: str | None = None
    collation: str | None = Field(default=None, description="Table default collation.")
    auto_increment: int | None = Field(default=None, description="Next AUTO_INCREMENT value.")
    partitions: list[str] = Field(
        default_factory=list, description="Partition (and subpartition) names, in order."
    )
    digest: str | None = Field(
        default=None, description="sha256 of the normalised SHOW CREATE TABLE."
    )


class SchemaObject(BaseModel):
    """A view, trigger, routine, event or sequence: its normalised definition and context.

    `sql_mode`, `character_set_client`, `collation_connection` and `database_collation` are
    what the server stored with the object when it was created; they change what it does.
    """

    kind: ObjectKind
    name: str
    digest: str | None = Field(default=None, description="sha256 of the normalised definition.")
    table: str | None = Field(default=None, description="Trigger: the table it fires on.")
    action_order: int | None = Field(default=None, description="Trigger: ACTION_ORDER.")
    sql_mode: str | None = None
    character_set_client: str | None = None
    collation_connection: str | None = None
    database_collation: str | None = None
    time_zone: str | None = Field(default=None, description="Event: its time zone.")
    definer: str | None = Field(default=None, description="Recorded, not compared.")
    unreadable: str | None = Field(
        default=None,
        description="Why the reader could not see the definition (then `digest` is None and "
        "the definition is not compared): the privilege it lacked, and the grant that allows it.",
    )


class ObjectCatalog(BaseModel):
    """Every object of one database, as a drill compares it."""

    charset: str | None = Field(default=None, description="Database default character set.")
    collation: str | None = Field(default=None, description="Database default collation.")
    tables: dict[str, TableShape] = Field(default_factory=dict)
    objects: list[SchemaObject] = Field(default_factory=list)
    unread: dict[str, str] = Field(
        default_factory=dict,
        description="Kinds the server would not list, with the reason (e.g. events while the "
        "event scheduler is disabled).",
    )

    def of_kind(self, kind: ObjectKind) -> list[SchemaObject]:
        return [o for o in self.objects if o.kind == kind]

    def counts(self) -> dict[str, int]:
        """How many objects of each kind (tables included)."""
        result = {"table": len(self.tables)}
        for kind in OBJECT_KINDS[1:]:
            result[kind] = len(self.of_kind(kind))
        return result


# -- normalising -------------------------------------------------------------------------------


def strip_definer(sql: str) -> str:
    """The statement without its first `DEFINER=user@host` clause."""
    return _DEFINER.sub("", sql, count=1)


def strip_own_schema(sql: str, database: str) -> str:
    """Drop the `database`. qualifier the server writes into tables' and views' definitions."""
    return sql.replace(backquote(database) + ".", "")


def normalise_table(create_table: str, database: str) -> str:
    """SHOW CREATE TABLE without AUTO_INCREMENT=N and its own schema qualifier."""
    text = _AUTO_INCREMENT_OPTION.sub("", create_table)
    return _tidy(strip_own_schema(text, database))


def normalise_view(create_view: str, database: str) -> str:
    """SHOW CREATE VIEW without its DEFINER and its own schema qualifier."""
    return _tidy(strip_own_schema(strip_definer(create_view), database))


def normalise_program(create_statement: str) -> str:
    """A trigger's, routine's or event's CREATE statement without its DEFINER (body verbatim)."""
    return _tidy(strip_definer(create_statement))


def _tidy(sql: str) -> str:
    return "\n".join(line.rstrip() for line in sql.strip().replace("\r\n", "\n").split("\n"))


def digest(text: str) -> str:
    """sha256 of a normalised definition."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- comparing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectDifference:
    """One way the restored copy differs from the backup's catalog."""

    kind: str
    name: str
    what: str

    @property
    def message(self) -> str:
        return f"{self.kind} {backquote(self.name)}: {self.what}"


_PROGRAM_CONTEXT = (
    ("sql_mode", "sql_mode"),
    ("character_set_client", "character_set_client"),
    ("collation_connection", "collation_connection"),
    ("database_collation", "database collation"),
    ("time_zone", "time_zone"),
)


def compare_catalogs(
    expected: ObjectCatalog, actual: ObjectCatalog, database: str = ""
) -> list[ObjectDifference]:
    """Every difference between the backup's catalog and the restored copy's, named.

    A missing, extra or changed object is a difference. AUTO_INCREMENT may be higher after
    the restore (the catalog is read just before the dump, writes may raise it) but not lower.
    """
    diffs: list[ObjectDifference] = []
    for attribute, label in (("charset", "character set"), ("collation", "collation")):
        want, got = getattr(expected, attribute), getattr(actual, attribute)
        if want is not None and want != got:
            diffs.append(
                ObjectDifference("database", database, f"default {label} {got} != {want} (backup)")
            )
    diffs += _compare_tables(expected.tables, actual.tables)
    skipped = set(expected.unread) | set(actual.unread)
    diffs += _compare_objects(
        [o for o in expected.objects if o.kind not in skipped],
        [o for o in actual.objects if o.kind not in skipped],
    )
    return diffs


def unchecked_kinds(expected: ObjectCatalog, actual: ObjectCatalog) -> list[str]:
    """What compare_catalogs could not compare: kinds one side could not list, and
    definitions one side's reader could not see (the reason says which grant allows it)."""
    notes = [
        f"{kind}s: the backup's server could not list them ({why})"
        for kind, why in expected.unread.items()
    ]
    notes += [
        f"{kind}s: the restored copy's server could not list them ({why})"
        for kind, why in actual.unread.items()
    ]
    for side, catalog in (("the backup", expected), ("the restored copy", actual)):
        notes += [
            f"{o.kind} {backquote(o.name)}: definition not compared, {side}'s reader could not "
            f"see it ({o.unreadable})"
            for o in catalog.objects
            if o.unreadable is not None and o.kind not in catalog.unread
        ]
    return notes


def _compare_tables(
    expected: dict[str, TableShape], actual: dict[str, TableShape]
) -> list[ObjectDifference]:
    diffs = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        if want is None:
            diffs.append(ObjectDifference("table", name, "not in the backup (extra after restore)"))
            continue
        if got is None:
            diffs.append(ObjectDifference("table", name, "missing after restore"))
            continue
        for attribute, label in (
            ("engine", "engine"),
            ("row_format", "row format"),
            ("collation", "collation"),
            ("partitions", "partitions"),
        ):
            if getattr(want, attribute) != getattr(got, attribute):
                diffs.append(
                    ObjectDifference(
                        "table",
                        name,
                        f"{label} {_shown(getattr(got, attribute))} != "
                        f"{_shown(getattr(want, attribute))} (backup)",
                    )
                )
        if want.auto_increment is not None and (got.auto_increment or 0) < want.auto_increment:
            diffs.append(
                ObjectDifference(
                    "table",
                    name,
                    f"AUTO_INCREMENT {_shown(got.auto_increment)} < {want.auto_increment} (backup)",
                )
            )
        if want.digest is not None and want.digest != got.digest:
            diffs.append(ObjectDifference("table", name, "definition (SHOW CREATE TABLE) differs"))
    return diffs


def _compare_objects(
    expected: Iterable[SchemaObject], actual: Iterable[SchemaObject]
) -> list[ObjectDifference]:
    wanted = {(o.kind, o.name): o for o in expected}
    found = {(o.kind, o.name): o for o in actual}
    diffs = []
    for key in sorted(set(wanted) | set(found), key=lambda k: (OBJECT_KINDS.index(k[0]), k[1])):
        kind, name = key
        want, got = wanted.get(key), found.get(key)
        if want is None:
            diffs.append(ObjectDifference(kind, name, "not in the backup (extra after restore)"))
            continue
        if got is None:
            diffs.append(ObjectDifference(kind, name, "missing after restore"))
            continue
        readable = want.unreadable is None and got.unreadable is None  # else: unchecked_kinds
        if readable and want.digest is not None and want.digest != got.digest:
            diffs.append(ObjectDifference(kind, name, "definition differs"))
        if want.table != got.table:
            diffs.append(
                ObjectDifference(
                    kind, name, f"fires on {_shown(got.table)} != {_shown(want.table)}"
                )
            )
        if want.action_order != got.action_order:
            diffs.append(
                ObjectDifference(
                    kind,
                    name,
                    f"trigger order (ACTION_ORDER) {_shown(got.action_order)} != "
                    f"{_shown(want.action_order)} (backup)",
                )
            )
        for attribute, label in _PROGRAM_CONTEXT:
            w, g = getattr(want, attribute), getattr(got, attribute)
            if w is not None and w != g:
                diffs.append(
                    ObjectDifference(kind, name, f"{label} {_shown(g)} != {_shown(w)} (backup)")
                )
    return diffs


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return f"'{value}'" if isinstance(value, str) else str(value)


# -- Markdown ----------------------------------------------------------------------------------


def markdown_code(text: str) -> str:
    """`text` as an inline code span safe inside a Markdown table cell.

    The fence is one backtick longer than the longest run of backticks in `text`; `|` is
    escaped (GitHub tables split on it even inside code); newlines become spaces.
    """
    flat = text.replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def markdown_text(text: str) -> str:
    """Plain text for a Markdown table cell: `|` escaped, newlines flattened."""
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def object_report_lines(
    differences: Iterable[ObjectDifference], checked: dict[str, int], unchecked: Iterable[str]
) -> list[str]:
    """The drill report's "Objects" section: what was compared, and every difference."""
    found = list(differences)
    lines = ["## Objects (backup's catalog vs restored)", ""]
    if checked:
        compared = ", ".join(f"{n} {kind}(s)" for kind, n in checked.items() if n)
        lines += [
            f"Compared {compared or 'no objects'}: definitions, sql_mode, character sets, "
            "collations, trigger order, engines, row formats, partitions, AUTO_INCREMENT.",
            "",
        ]
    lines += [f"⚠️ Not checked: {markdown_text(note)}" for note in unchecked]
    if found:
        lines += ["", "| kind | name | difference |", "|---|---|---|"]
        lines += [
            f"| {d.kind} | {markdown_code(d.name)} | {markdown_text(d.what)} ❌ |" for d in found
        ]
    elif checked:
        lines.append("Every object matches ✅")
    lines.append("")
    return lines
