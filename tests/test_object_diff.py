"""The object catalog's normaliser, comparison and Markdown, and identifier quoting (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.errors import ConfigurationError
from tasks.manifest import BackupManifest, parse_manifest
from tasks.mysql import identifier_problem, quote_composed_name, quote_identifier
from tasks.object_diff import (
    ObjectCatalog,
    SchemaObject,
    TableShape,
    compare_catalogs,
    digest,
    markdown_code,
    normalise_program,
    normalise_table,
    normalise_view,
    object_report_lines,
    strip_definer,
    unchecked_kinds,
)

# -- identifiers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("Bestellungen für Kunden", "`Bestellungen für Kunden`"),
        ("a`b", "`a``b`"),
        ("``", "``````"),
        ("select", "`select`"),
        ('it\'s "quoted"', '`it\'s "quoted"`'),
        (" leading", "` leading`"),
        ("x" * 64, f"`{'x' * 64}`"),
        ("東京", "`東京`"),
    ],
)
def test_quote_identifier_quotes_every_name_mariadb_accepts(name: str, quoted: str) -> None:
    assert quote_identifier(name) == quoted


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("x" * 65, "65 characters long"),
        ("trailing ", "ends with whitespace"),
        ("tab\t", "ends with whitespace"),
        ("nul\x00here", "NUL"),
        ("emoji 😀", "Basic Multilingual Plane"),
    ],
)
def test_quote_identifier_refuses_only_what_mariadb_refuses(name: str, problem: str) -> None:
    assert problem in (identifier_problem(name) or "")
    with pytest.raises(ConfigurationError, match="cannot be a MariaDB identifier"):
        quote_identifier(name)


def test_composed_names_stay_narrow() -> None:
    assert quote_composed_name("drill_src_20250101t000000z_abcdef") == (
        "`drill_src_20250101t000000z_abcdef`"
    )
    with pytest.raises(ConfigurationError, match="scratch_database 'a b' is not allowed"):
        quote_composed_name("a b", "scratch_database")


# -- normalising -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "definer",
    ["`root`@`localhost`", "`we``ird`@`%`", "'app'@'10.0.0.%'", "CURRENT_USER", "`a_role`"],
)
def test_strip_definer_drops_every_form_of_the_clause(definer: str) -> None:
    sql = f"CREATE DEFINER={definer} TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a = 1"
    assert strip_definer(sql) == "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a = 1"


def test_a_table_digests_the_same_in_any_database_and_at_any_auto_increment() -> None:
    source = (
        "CREATE TABLE `t a` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`id`)\n"
        ") ENGINE=InnoDB AUTO_INCREMENT=50 DEFAULT CHARSET=latin1"
    )
    restored = source.replace("AUTO_INCREMENT=50", "AUTO_INCREMENT=77")
    assert normalise_table(source, "src") == normalise_table(restored, "drill_x")
    assert "NOT NULL AUTO_INCREMENT," in normalise_table(source, "src")
    other = source.replace("int(11)", "bigint(20)")
    assert digest(normalise_table(source, "src")) != digest(normalise_table(other, "src"))


def test_a_view_digests_the_same_under_another_database_name_and_definer() -> None:
    template = (
        "CREATE ALGORITHM=UNDEFINED DEFINER={d} SQL SECURITY DEFINER VIEW `v` AS "
        "select `{db}`.`t`.`id` AS `id` from `{db}`.`t`"
    )
    source = template.format(d="`root`@`localhost`", db="we`ird".replace("`", "``"))
    restored = template.format(d="`drill`@`%`", db="drill_src_1")
    assert normalise_view(source, "we`ird") == normalise_view(restored, "drill_src_1")
    assert normalise_view(source, "we`ird").startswith("CREATE ALGORITHM=UNDEFINED SQL SECURITY")


def test_a_stored_program_body_is_kept_verbatim() -> None:
    body = "CREATE DEFINER=`root`@`%` PROCEDURE `p`()\nSELECT * FROM `src`.`t`  \r\n"
    assert normalise_program(body) == "CREATE PROCEDURE `p`()\nSELECT * FROM `src`.`t`"


# -- comparing ---------------------------------------------------------------------------------


def _catalog() -> ObjectCatalog:
    context = {
        "sql_mode": "STRICT_ALL_TABLES,TRADITIONAL",
        "character_set_client": "utf8mb4",
        "collation_connection": "utf8mb4_general_ci",
        "database_collation": "latin1_swedish_ci",
    }
    return ObjectCatalog(
        charset="latin1",
        collation="latin1_swedish_ci",
        tables={
            "t a": TableShape(
                engine="InnoDB",
                row_format="Dynamic",
                collation="latin1_swedish_ci",
                auto_increment=50,
                partitions=["p0", "p1"],
                digest="d-t",
            )
        },
        objects=[
            SchemaObject(kind="view", name="v|w", digest="d-v"),
            SchemaObject(
                kind="trigger", name="tr1", digest="d-1", table="t a", action_order=1, **context
            ),
            SchemaObject(
                kind="trigger", name="tr2", digest="d-2", table="t a", action_order=2, **context
            ),
            SchemaObject(kind="procedure", name="p`q", digest="d-p", **context),
            SchemaObject(kind="function", name="f", digest="d-f", **context),
            SchemaObject(kind="event", name="e", digest="d-e", time_zone="SYSTEM", **context),
            SchemaObject(kind="sequence", name="s", digest="d-s"),
        ],
    )


def test_identical_catalogs_have_no_difference() -> None:
    assert compare_catalogs(_catalog(), _catalog(), "src") == []


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("view", "v|w"),
        ("trigger", "tr2"),
        ("procedure", "p`q"),
        ("function", "f"),
        ("event", "e"),
        ("sequence", "s"),
    ],
)
def test_a_missing_object_of_each_kind_is_named(kind: str, name: str) -> None:
    restored = _catalog()
    restored.objects = [o for o in restored.objects if (o.kind, o.name) != (kind, name)]
    [difference] = compare_catalogs(_catalog(), restored)
    assert (difference.kind, difference.name, difference.what) == (
        kind,
        name,
        "missing after restore",
    )
    assert difference.message == f"{kind} `{name.replace('`', '``')}`: missing after restore"


def test_a_missing_and_an_extra_table_are_named() -> None:
    restored = _catalog()
    restored.tables = {"other": restored.tables["t a"]}
    messages = [d.message for d in compare_catalogs(_catalog(), restored)]
    assert messages == [
        "table `other`: not in the backup (extra after restore)",
        "table `t a`: missing after restore",
    ]


def test_every_changed_attribute_is_named() -> None:
    restored = _catalog()
    restored.collation = "utf8mb4_general_ci"
    restored.tables["t a"] = TableShape(
        engine="Aria",
        row_format="Page",
        collation="latin1_bin",
        auto_increment=1,
        partitions=["p0"],
        digest="other",
    )
    trigger = restored.objects[1]
    restored.objects[1] = trigger.model_copy(
        update={"sql_mode": "", "action_order": 2, "digest": "x"}
    )
    routine = restored.objects[3]
    restored.objects[3] = routine.model_copy(
        update={"collation_connection": "utf8mb4_bin", "database_collation": "utf8mb4_general_ci"}
    )
    messages = [d.message for d in compare_catalogs(_catalog(), restored, "src")]
    assert messages == [
        "database `src`: default collation utf8mb4_general_ci != latin1_swedish_ci (backup)",
        "table `t a`: engine 'Aria' != 'InnoDB' (backup)",
        "table `t a`: row format 'Page' != 'Dynamic' (backup)",
        "table `t a`: collation 'latin1_bin' != 'latin1_swedish_ci' (backup)",
        "table `t a`: partitions [p0] != [p0, p1] (backup)",
        "table `t a`: AUTO_INCREMENT 1 < 50 (backup)",
        "table `t a`: definition (SHOW CREATE TABLE) differs",
        "trigger `tr1`: definition differs",
        "trigger `tr1`: trigger order (ACTION_ORDER) 2 != 1 (backup)",
        "trigger `tr1`: sql_mode '' != 'STRICT_ALL_TABLES,TRADITIONAL' (backup)",
        "procedure `p``q`: collation_connection 'utf8mb4_bin' != 'utf8mb4_general_ci' (backup)",
        "procedure `p``q`: database collation 'utf8mb4_general_ci' != 'latin1_swedish_ci' (backup)",
    ]


def test_a_higher_auto_increment_after_restore_is_not_a_difference() -> None:
    restored = _catalog()
    restored.tables["t a"] = restored.tables["t a"].model_copy(update={"auto_increment": 51})
    assert compare_catalogs(_catalog(), restored) == []


# -- Markdown ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("plain", "`plain`"),
        ("a|b", "`a\\|b`"),
        ("a`b", "``a`b``"),
        ("`x`", "`` `x` ``"),
        ("two\nlines", "`two lines`"),
    ],
)
def test_markdown_code_survives_pipes_backticks_and_newlines(name: str, code: str) -> None:
    assert markdown_code(name) == code


def test_the_report_section_lists_each_difference_escaped() -> None:
    restored = _catalog()
    restored.objects = restored.objects[1:]
    lines = object_report_lines(
        compare_catalogs(_catalog(), restored), _catalog().counts(), ["a | b"]
    )
    assert "| view | `v\\|w` | missing after restore ❌ |" in lines
    assert "⚠️ Not checked: a \\| b" in lines
    assert any(line.startswith("Compared 1 table(s), 1 view(s), 2 trigger(s)") for line in lines)


# -- manifests ---------------------------------------------------------------------------------


def _manifest_json() -> dict:  # type: ignore[type-arg]
    return {
        "backup_id": "20250101T020000Z-a1b2c3",
        "source": "vibebench",
        "database": "vibebench",
        "started_at": "2025-01-01T02:00:00Z",
        "consistent_at": "2025-01-01T02:00:01Z",
        "finished_at": "2025-01-01T02:00:05Z",
        "objects": [{"name": "dump.sql.zst", "size": 1, "sha256": "00"}],
        "tables": {"t": {"rows": 1, "checksum": 5}},
        "views": ["v"],
        "routines": ["p"],
        "prefix": "mysql/vibebench/2025/01/01/20250101T020000Z-a1b2c3/",
    }


def test_an_old_manifest_without_a_catalog_still_parses(tmp_path: Path) -> None:
    manifest = parse_manifest(json.dumps(_manifest_json()).encode())
    assert manifest.catalog is None and manifest.database_collation is None
    assert manifest.views == ["v"]


def test_a_catalog_round_trips_through_the_manifest() -> None:
    manifest = BackupManifest.model_validate({**_manifest_json(), "catalog": _catalog()})
    again = parse_manifest(manifest.to_json())
    assert again.catalog == _catalog()
    assert (again.database_charset, again.database_collation) == ("latin1", "latin1_swedish_ci")


def test_a_kind_one_server_could_not_list_is_not_compared_but_said() -> None:
    restored = _catalog()
    restored.objects = [o for o in restored.objects if o.kind != "event"]
    restored.unread = {"event": "error 1577: Cannot proceed, because event scheduler is disabled"}
    assert compare_catalogs(_catalog(), restored) == []
    assert unchecked_kinds(_catalog(), restored) == [
        "events: the restored copy's server could not list them (error 1577: Cannot proceed, "
        "because event scheduler is disabled)"
    ]


def test_a_definition_the_reader_could_not_see_is_not_compared_but_said() -> None:
    why = "not its definer; GRANT SELECT ON mysql.proc TO `dr`@`%`"
    restored = _catalog()
    hidden = next(o for o in restored.objects if o.kind == "procedure")
    hidden.digest, hidden.unreadable = None, why
    assert compare_catalogs(_catalog(), restored) == []
    assert unchecked_kinds(_catalog(), restored) == [
        f"procedure `p``q`: definition not compared, the restored copy's reader could not see "
        f"it ({why})"
    ]
    # Its context is still compared, and so is every readable definition.
    hidden.sql_mode = "ANSI"
    function = next(o for o in restored.objects if o.kind == "function")
    function.digest = "changed"
    assert [d.message for d in compare_catalogs(_catalog(), restored)] == [
        "procedure `p``q`: sql_mode 'ANSI' != 'STRICT_ALL_TABLES,TRADITIONAL' (backup)",
        "function `f`: definition differs",
    ]
