"""The deployments' forms through the real Prefect API: bad values are refused before a run
exists, and a manual run of a destructive deployment is a dry run.

The known bad values of issue #14 (an RTO of `-PT5M` or `20 minutes`, the tenant `admin`, bad
source names, out-of-range numbers) are sent with `create_flow_run_from_deployment`, the call
the UI's run form makes.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.responses import DeploymentResponse
from prefect.exceptions import PrefectHTTPStatusError

# Known bad values per field name: each is sent to every deployment that has the field.
BAD: dict[str, list[Any]] = {
    "rto_target": ["-PT5M", "20 minutes", "soon", ""],
    "rpo_target": ["-1h", "an hour"],
    "stale_after": ["-PT12H", "12 hours"],
    "time_budget": ["forever"],
    "namespace_timeout": ["5 min"],
    "rollout_timeout": ["-10m"],
    "replacement_timeout": ["3 minutes"],
    "keep_old_colour": ["tomorrow"],
    "lock_wait": ["-1s"],
    "tenant": ["admin", "kube-system", "default", "Acme", "a;drop database x", "ab"],
    "source": ["../etc", "a b", "", "-leading-dash", "x" * 65],
    "backup": ["yesterday", "2025-13", "../../x"],
    "database": ["", "x" * 65, "trailing "],
    "bucket": ["_monitoring", ""],
    "namespace": ["Bad_NS", "-x", ""],
    "app": ["My App"],
    "deployment": ["Core!"],
    "pod": ["Pod/1"],
    "image": ["nginx", "gcr.io/vibebench/core", "GCR.io/Upper/Case:1", ""],
    "contact": ["nobody"],
    "region": ["Europe"],
    "colour": ["purple"],
    "codec": ["lz4"],
    "as_of": ["2025-01-01T00:00:00"],
    "dry_run": ["maybe"],
    "sla": ["uptime"],
    "resource_id": [""],
}
# Valid values for required fields, so that only the bad field is wrong.
REQUIRED = {
    "tenant": "acme",
    "contact": "ops@example.test",
    "image": "gcr.io/vibebench/core:1.4.2",
    "colour": "blue",
    "pod": "vibebench-core-1",
    "sla": "backup",
    "resource_id": "vibeops.backup.mysql.vibebench",
    "window": "PT26H",
}


def out_of_range(prop: dict[str, Any]) -> list[Any]:
    """Numbers just outside a field's declared bounds."""
    if prop.get("type") not in ("integer", "number"):
        return []
    values = []
    if "minimum" in prop:
        values.append(prop["minimum"] - 1)
    if "maximum" in prop:
        values.append(prop["maximum"] + 1)
    if "exclusiveMinimum" in prop:
        values.append(prop["exclusiveMinimum"])
    return values


# Values that are bad for most deployments but valid for one, with the reason.
VALID_HERE = {
    ("report-sla-missed/on-sla", "source", ""): "empty = the last part of the watched resource id",
}


def bad_cases(key: str, deployment: DeploymentResponse) -> list[tuple[str, Any]]:
    props = deployment.parameter_openapi_schema["properties"]
    cases = [
        (name, value)
        for name in props
        for value in BAD.get(name, [])
        if (key, name, value) not in VALID_HERE
    ]
    cases += [(name, value) for name, prop in props.items() for value in out_of_range(prop)]
    return cases


def base_parameters(deployment: DeploymentResponse) -> dict[str, Any]:
    required = deployment.parameter_openapi_schema.get("required", [])
    return {name: REQUIRED[name] for name in required}


def run_count(client: Any, deployment_id: Any) -> int:
    """Runs someone started (the scheduler's upcoming runs may appear at any time)."""
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )
    return len([r for r in runs if not r.auto_scheduled])


def test_every_deployment_refuses_known_bad_values_before_a_run_exists(deployed) -> None:
    refusals: dict[str, int] = {}
    accepted: list[str] = []
    with get_client(sync_client=True) as client:
        for key, deployment in sorted(deployed.items()):
            assert deployment.enforce_parameter_schema, f"{key} does not enforce its schema"
            cases = bad_cases(key, deployment)
            assert cases, f"{key}: no known bad value to send"
            before = run_count(client, deployment.id)
            for name, value in cases:
                parameters = {**base_parameters(deployment), name: value}
                try:
                    run = client.create_flow_run_from_deployment(
                        deployment.id, parameters=parameters
                    )
                except PrefectHTTPStatusError as exc:
                    assert exc.response.status_code == 409, exc.response.text
                    assert name in exc.response.text, exc.response.text
                    refusals[key] = refusals.get(key, 0) + 1
                else:
                    accepted.append(f"{key}: {name}={value!r} (run {run.name})")
                    client.delete_flow_run(run.id)
            assert run_count(client, deployment.id) == before, f"{key}: a run was created"
    assert accepted == [], "accepted by the API:\n" + "\n".join(accepted)
    assert set(refusals) == set(deployed)


def test_good_typed_values_are_accepted_and_kept(deployed) -> None:
    """The positive control: a typed duration and a typed run name pass the same API."""
    drill = deployed["restore-drill/weekly"]
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            drill.id, parameters={"rto_target": "45m", "source": "vibebench-2"}, name="my check"
        )
        try:
            assert run.parameters["rto_target"] == "45m"
            assert run.name == "my check"
        finally:
            client.delete_flow_run(run.id)


DESTRUCTIVE = [
    "purge-retention/daily",
    "cleanup-drills/hourly",
    "deprovision-tenant/on-demand",
    "scale-down-idle-colour/after-keep-window",
    "restart-deployment/on-alert",
    "recycle-hung-pod/on-alert",
]


@pytest.mark.parametrize("key", DESTRUCTIVE)
def test_a_manual_run_of_a_destructive_deployment_is_a_dry_run(deployed, key: str) -> None:
    """What Quick run sends: the deployment's own parameters over the schema's defaults."""
    deployment = deployed[key]
    schema_default = deployment.parameter_openapi_schema["properties"]["dry_run"]["default"]
    assert schema_default is True
    assert deployment.parameters.get("dry_run", True) is True, deployment.parameters
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters=base_parameters(deployment)
        )
        try:
            assert run.parameters.get("dry_run", schema_default) is True, run.parameters
        finally:
            client.delete_flow_run(run.id)
    for schedule in deployment.schedules:
        assert schedule.parameters.get("dry_run") in (None, False)


def test_only_the_schedules_purge_and_drop(deployed) -> None:
    for key in ("purge-retention/daily", "cleanup-drills/hourly"):
        [schedule] = deployed[key].schedules
        assert schedule.parameters == {"dry_run": False}, key


def test_the_api_error_names_the_field(deployed) -> None:
    """The refusal the UI shows: the field and the rule (no traceback from inside a run)."""
    provision = deployed["provision-tenant/on-demand"]
    with get_client(sync_client=True) as client, pytest.raises(PrefectHTTPStatusError) as info:
        client.create_flow_run_from_deployment(
            provision.id, parameters={**base_parameters(provision), "tenant": "admin"}
        )
    response: httpx.Response = info.value.response
    assert response.status_code == 409
    assert "tenant" in response.text and "admin" in response.text
