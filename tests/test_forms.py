"""The form mechanism without a server: signatures, titles, durations, run names, schemas."""

from __future__ import annotations

import inspect
from datetime import timedelta

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from pydantic import BaseModel, ValidationError

from flows.forms import form_signature, human_title, params_of
from flows.restore_drill import RestoreDrillParams
from flows.run_names import keeps_typed_name
from tasks.form_fields import DURATION_PATTERN, parse_duration, short_duration
from tests.fixtures.deployments import ROOT

ENTRYPOINTS = sorted(
    {d["entrypoint"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
)


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("rto_target", "RTO target"),
        ("rpo_target", "RPO target"),
        ("drill_server_block", "Drill server block"),
        ("protected_backup_ids", "Protected backup IDs"),
        ("mongo_connection_block", "MongoDB connection block"),
    ],
)
def test_titles_read_like_english(name: str, title: str) -> None:
    assert human_title(name) == title


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(minutes=90)),
        (" 90s ", timedelta(seconds=90)),
        ("2d", timedelta(days=2)),
        ("PT30M", timedelta(minutes=30)),
        ("P1DT2H", timedelta(days=1, hours=2)),
    ],
)
def test_durations_are_typed_the_way_people_write_them(text: str, delta: timedelta) -> None:
    assert parse_duration(text) == delta
    assert parse_duration(short_duration(delta)) == delta


@pytest.mark.parametrize("bad", ["-PT5M", "20 minutes", "soon", "", "P", "PT", "1x"])
def test_bad_durations_name_the_field_and_the_format(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        RestoreDrillParams(rto_target=bad)  # type: ignore[arg-type]
    assert "rto_target" in str(info.value)
    assert "30m" in str(info.value)


def test_durations_are_shown_and_stored_in_the_typed_form() -> None:
    params = RestoreDrillParams(rto_target=timedelta(minutes=45))
    assert params.model_dump(mode="json")["rto_target"] == "45m"
    assert RestoreDrillParams.model_validate(params.model_dump(mode="json")) == params


@pytest.mark.parametrize(
    ("name", "typed"),
    [
        ("smart-hedgehog", False),  # the API's generated name
        ("chi793-chaya-f", False),  # the UI run form's pre-filled names
        ("eta-brinda-cluster", False),
        ("gamma-devos", False),
        ("", False),
        (None, False),
        ("drill before the upgrade", True),
        ("nightly-2", True),
        ("check rto 45m", True),
    ],
)
def test_a_typed_run_name_is_kept_a_generated_one_replaced(name: str | None, typed: bool) -> None:
    assert keeps_typed_name(name) is typed


def test_the_signature_is_keyword_only_and_params_of_round_trips() -> None:
    signature = form_signature(RestoreDrillParams)
    assert list(signature.parameters) == list(RestoreDrillParams.model_fields)
    assert {p.kind for p in signature.parameters.values()} == {inspect.Parameter.KEYWORD_ONLY}
    params = RestoreDrillParams(source="x", rto_target=timedelta(minutes=5))
    assert RestoreDrillParams(**params_of(params)) == params


def _walk(schema: dict) -> list[tuple[str, dict]]:
    """Every property of the schema and of its definitions."""
    found = list(schema.get("properties", {}).items())
    for definition in (schema.get("definitions") or {}).values():
        found += list(definition.get("properties", {}).items())
    return found


def _validated_fields(model: type[BaseModel]) -> set[str]:
    decorators = model.__pydantic_decorators__.field_validators.values()
    return {name for d in decorators for name in d.info.fields}


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_every_form_reads_well_and_carries_its_checks(entrypoint: str) -> None:
    flow = load_flow_from_entrypoint(entrypoint)
    schema = flow.parameters.model_dump()
    model = flow.fn.form_model  # type: ignore[attr-defined]
    assert "params" not in schema["properties"]
    for name, prop in _walk(schema):
        text = str(prop.get("description", ""))
        assert "<" not in text and ">" not in text, f"{name}: the UI renders <...> as HTML"
    for name, prop in schema["properties"].items():
        assert prop["title"] == human_title(name)
        if prop.get("pattern") == DURATION_PATTERN:
            assert "30m" in prop["description"], f"{name}: a duration needs an example"
    # A field checked in Python is also checked by the API, where JSON Schema can say it.
    for name in _validated_fields(model) - {"rto_target", "rpo_target", "namespace_timeout"}:
        prop = schema["properties"][name]
        assert {"pattern", "not", "enum", "anyOf"} & set(prop), f"{name}: only checked in Python"


def test_blocks_have_no_external_logo_urls() -> None:
    """The UI works offline: a logo on another host shows as a broken image."""
    import blocks

    for name in blocks.__all__:
        block = getattr(blocks, name)
        assert getattr(block, "_logo_url", None) is None, f"{name} loads its logo from the web"
