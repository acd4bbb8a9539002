"""prefect.yaml is what runs in production: every entrypoint loads and every deployment applies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from flows.forms import human_title

ROOT = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = SPEC["deployments"]


def _deployment_id(spec: dict) -> str:
    return f"{spec['entrypoint']}::{spec['name']}"


@pytest.mark.parametrize("spec", DEPLOYMENTS, ids=_deployment_id)
def test_entrypoint_loads_and_takes_its_form_fields_at_the_top_level(spec: dict) -> None:
    flow = load_flow_from_entrypoint(spec["entrypoint"])
    schema = flow.parameters.model_dump()
    model = flow.fn.form_model  # type: ignore[attr-defined]
    assert list(schema["properties"]) == list(model.model_fields), "one form field per model field"
    for name, prop in schema["properties"].items():
        assert prop["title"] == human_title(name), name
        assert prop.get("description"), f"{name} has no description"
    for name in spec.get("parameters") or {}:
        assert name in model.model_fields, f"prefect.yaml sets unknown parameter {name!r}"
    assert spec["work_pool"]["name"] == "vibeops-process"
    assert spec.get("concurrency_limit") == 1, "every deployment has a concurrency limit"
    assert spec.get("description")
    for schedule in spec.get("schedules", []):
        assert schedule["timezone"] == "UTC"


def test_deploy_all_applies_every_deployment_to_a_real_server(deployed: dict) -> None:
    deployed = {tuple(key.split("/")): d for key, d in deployed.items()}
    nightly = deployed[("backup-mysql", "nightly")]
    assert nightly.schedules[0].schedule.cron == "0 2 * * *"
    fields = nightly.parameter_openapi_schema["properties"]
    assert "params" not in fields, "no params wrapper: the fields sit at the top level"
    assert fields["source"]["title"] == "Source"
    assert fields["compression_level"]["maximum"] == 19
    drill = deployed[("restore-drill", "weekly")].parameter_openapi_schema["properties"]
    assert drill["rto_target"]["title"] == "RTO target"
    assert nightly.work_pool_name == "vibeops-process"
    names = {f"{flow}/{name}" for flow, name in deployed}
    for expected in [
        "backup-mysql/nightly",
        "restore-drill/weekly",
        "purge-retention/daily",
        "deploy-staging/on-demand",
    ]:
        assert expected in names, sorted(names)
    assert len([d for d in DEPLOYMENTS]) <= len(deployed)
