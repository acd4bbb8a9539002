"""The flows the `vibeops` command runs: one command per flow, options from its parameter model.

`backup` and `drill` take `--kind mysql|mongodb|influxdb` and run backup-<kind> /
restore-drill(-<kind>); every other flow is a command under its own name. Commands are built
only when used, so `vibeops status` does not import every flow.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import typer
from pydantic import BaseModel

from deployments.cli_options import FieldOption, build_params, model_options


@dataclass(frozen=True)
class FlowRef:
    """Where a flow and its parameter model live."""

    module: str
    flow: str
    model: str

    def load(self) -> tuple[Any, type[BaseModel]]:
        module = importlib.import_module(self.module)
        return getattr(module, self.flow), getattr(module, self.model)


@dataclass(frozen=True)
class FlowCommand:
    help: str
    kinds: dict[str, FlowRef]


FLOW_COMMANDS: dict[str, FlowCommand] = {
    "backup": FlowCommand(
        "Run backup-mysql | backup-mongodb | backup-influxdb once (--kind).",
        {
            "mysql": FlowRef("flows.backup", "backup_mysql", "BackupMySQLParams"),
            "mongodb": FlowRef("flows.backup_mongodb", "backup_mongodb", "BackupMongoDBParams"),
            "influxdb": FlowRef("flows.backup_influxdb", "backup_influxdb", "BackupInfluxParams"),
        },
    ),
    "drill": FlowCommand(
        "Run restore-drill | restore-drill-mongodb | restore-drill-influxdb once (--kind).",
        {
            "mysql": FlowRef("flows.restore_drill", "restore_drill", "RestoreDrillParams"),
            "mongodb": FlowRef(
                "flows.restore_drill_mongodb", "restore_drill_mongodb", "RestoreDrillMongoDBParams"
            ),
            "influxdb": FlowRef(
                "flows.restore_drill_influxdb", "restore_drill_influxdb", "RestoreDrillInfluxParams"
            ),
        },
    ),
    "archive-binlogs": FlowCommand(
        "Run archive-binlogs: copy the closed binary logs to every region (point-in-time).",
        {"mysql": FlowRef("flows.archive_binlogs", "archive_binlogs", "ArchiveBinlogsParams")},
    ),
    "cleanup-drills": FlowCommand(
        "Run cleanup-drills: drop expired or abandoned drill targets (dry run by default).",
        {"mysql": FlowRef("flows.restore_drill", "cleanup_drills", "CleanupDrillsParams")},
    ),
    "purge-retention": FlowCommand(
        "Run purge-retention: plan the retention policy, and carry it out with --no-dry-run.",
        {"mysql": FlowRef("flows.retention", "purge_retention", "PurgeRetentionParams")},
    ),
    "deploy-staging": FlowCommand(
        "Run deploy-staging: a rolling or blue-green deploy with smoke checks and rollback.",
        {"mysql": FlowRef("flows.staging_deploy", "deploy_staging", "DeployStagingParams")},
    ),
    "rollback-deploy": FlowCommand(
        "Run rollback-deploy: undo the last promotion within its keep window.",
        {"mysql": FlowRef("flows.staging_deploy", "rollback_deploy", "RollbackParams")},
    ),
    "scale-down-idle-colour": FlowCommand(
        "Run scale-down-idle-colour: scale the idle blue-green colour to zero.",
        {"mysql": FlowRef("flows.staging_deploy", "scale_down_idle_colour", "ScaleDownParams")},
    ),
    "provision-tenant": FlowCommand(
        "Run provision-tenant: namespace, quota, network policy, database, user, secrets.",
        {"mysql": FlowRef("flows.tenants", "provision_tenant", "ProvisionTenantParams")},
    ),
    "deprovision-tenant": FlowCommand(
        "Run deprovision-tenant: final backup, then remove everything (dry run by default).",
        {"mysql": FlowRef("flows.tenants", "deprovision_tenant", "DeprovisionTenantParams")},
    ),
    "restart-deployment": FlowCommand(
        "Run restart-deployment: rollout restart and wait until ready.",
        {"mysql": FlowRef("flows.incidents", "restart_deployment", "RestartDeploymentParams")},
    ),
    "recycle-hung-pod": FlowCommand(
        "Run recycle-hung-pod: save its last log lines, delete it, confirm the replacement.",
        {"mysql": FlowRef("flows.incidents", "recycle_hung_pod", "RecycleHungPodParams")},
    ),
}

COMMON_OPTIONS = ("kind", "json_output")


def run_flow(flow: Any, params: BaseModel) -> Any:
    """Call `flow` with `params` and return its final state (never raises on failure).

    The one place that knows how flows take their parameters: the model's fields as
    keyword arguments (flows/forms.py).
    """
    from flows.forms import params_of

    return flow(**params_of(params), return_state=True)


def jsonable(value: Any) -> Any:
    """A JSON-ready form of a flow's result (models, dataclasses, lists, exceptions)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return json.loads(json.dumps(asdict(value), default=str))
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    return json.loads(json.dumps(value, default=str))


def _result_lines(result: Any) -> list[str]:
    """Plain lines for a flow's result: full ids and URIs, never shortened or wrapped."""
    record = getattr(result, "record", result)  # DrillFailed carries its record
    if hasattr(record, "passed") and hasattr(record, "rto_target_seconds"):
        lines = [drill_line(record)]
        lines += [f"  {reason}" for reason in record.reasons]
        return lines
    if hasattr(result, "backup_id") and hasattr(result, "regions"):
        lines = [
            f"backup {result.backup_id} committed ({result.total_size / 1e6:.1f} MB {result.codec})"
        ]
        return lines + [f"  {r.region}: {r.uri}" for r in result.regions]
    if isinstance(result, list):
        return [str(jsonable(item)) for item in result]
    return [] if result is None else [str(result)]


def drill_line(record: Any) -> str:
    verdict = "PASSED" if record.passed else "FAILED"
    return (
        f"restore drill {verdict}: backup {record.backup_id or '-'}, RTO {record.rto_seconds or 0:.1f} s"
        f" (target {record.rto_target_seconds:.0f} s), RPO {record.rpo_seconds or 0:.1f} s"
        f" (target {record.rpo_target_seconds:.0f} s), from {record.region or '-'}"
    )


@contextmanager
def use_server(api_url: str | None) -> Iterator[None]:
    """Point this process's Prefect client at `api_url`, or at a temporary server when None."""
    import os

    from prefect.settings import PREFECT_API_URL, temporary_settings

    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    else:
        os.environ.pop("PREFECT_API_URL", None)
        with temporary_settings(restore_defaults={PREFECT_API_URL}):
            yield


def choose_server() -> str | None:
    """The Prefect API to run on, announced in one line on stderr (None: in-process server)."""
    from deployments.local_stack_cli import find_api_url

    api_url, tried = find_api_url()
    if api_url:
        typer.echo(f"Prefect server: {api_url}", err=True)
    else:
        typer.echo(
            f"no Prefect server answered ({', '.join(tried)}): running on a temporary "
            "in-process server, so this run will not show in the UI (start one: vibeops up)",
            err=True,
        )
    return api_url


def execute(kind: str, flow: Any, params: BaseModel, json_output: bool) -> int:
    """Run one flow on the chosen server, print its outcome; returns the exit code."""
    api_url = choose_server()
    with use_server(api_url):
        state = run_flow(flow, params)
    result = state.result(raise_on_failure=False)
    run_id = str(state.state_details.flow_run_id)
    ui = f"{api_url.removesuffix('/api')}/runs/flow-run/{run_id}" if api_url else None
    ok = state.is_completed()
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "flow": flow.name,
                    "kind": kind,
                    "flow_run_id": run_id,
                    "state": state.type.value,
                    "message": state.message,
                    "ui": ui,
                    "result": jsonable(result),
                }
            )
        )
    else:
        for line in _result_lines(result):
            typer.echo(line)
        typer.echo(f"{flow.name}: {state.name}" + (f" ({ui})" if ui else f" (run {run_id})"))
        if not ok:
            typer.echo(f"{flow.name} failed: {state.message or result}", err=True)
    return 0 if ok else 1


def build_command(name: str) -> Any:
    """The command of one flow (a Typer command), with one option per field of its model(s)."""
    spec = FLOW_COMMANDS[name]
    loaded = {kind: ref.load() for kind, ref in spec.kinds.items()}
    options = model_options({kind: model for kind, (_, model) in loaded.items()})
    kinds = list(spec.kinds)

    def command(kind: str = kinds[0], json_output: bool = False, **values: Any) -> None:
        chosen = getattr(kind, "value", kind)
        flow, model = loaded[chosen]
        params = build_params(model, chosen, options, values)
        raise typer.Exit(execute(chosen, flow, params, json_output))

    kind_type = enum.Enum("kind", [(k, k) for k in kinds], type=str)  # type: ignore[misc]
    parameters = [
        inspect.Parameter(
            "kind",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(kinds[0], "--kind", help="Which store's flow to run."),
            annotation=kind_type,
        ),
        *(option.parameter(kinds) for option in options),
        inspect.Parameter(
            "json_output",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(False, "--json", help="Print the outcome as JSON."),
            annotation=bool,
        ),
    ]
    if len(kinds) == 1:
        parameters.pop(0)
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = spec.help
    single = typer.Typer(add_completion=False, rich_markup_mode=None)
    single.command(name)(command)
    return typer.main.get_command(single)


def command_fields(command: Any) -> set[str]:
    """The model fields a built command takes (its options minus --kind and --json)."""
    return {p.name for p in command.params if p.name and p.name not in COMMON_OPTIONS}


def field_options(name: str) -> tuple[dict[str, type[BaseModel]], list[FieldOption]]:
    """(kind -> model, options) of one flow command, for tests and docs."""
    models = {kind: ref.load()[1] for kind, ref in FLOW_COMMANDS[name].kinds.items()}
    return models, model_options(models)
