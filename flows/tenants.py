"""provision-tenant and deprovision-tenant: the tenant lifecycle from the seed's terraform step.

provision-tenant creates (or brings back in line) everything a tenant owns, each step a task
inside one Prefect transaction: any failure rolls back exactly what this run created or
changed, and the run fails naming the step. deprovision-tenant plans first (dry run by
default), takes and verifies a final backup, then removes the tenant in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.transactions import transaction
from pydantic import BaseModel, Field, field_validator

from blocks.defaults import resolve_mysql, resolve_store
from blocks.tenants import resolve_kube_cluster, resolve_tenant_settings, resolve_tiers
from flows.backup import backup_mysql
from flows.forms import form
from flows.run_names import run_name
from tasks.errors import (
    DeprovisionRefused,
    RehearsedFailure,
    TenantNameInvalid,
    TenantResourceConflict,
    TenantStepFailed,
    TenantUnknown,
)
from tasks.form_fields import Duration, not_one_of
from tasks.tenant_steps import (
    TenantInventory,
    apply_credentials_secret,
    apply_object,
    delete_credentials_block,
    delete_ingress,
    delete_namespace,
    delete_workloads,
    drop_tenant_database,
    drop_tenant_user,
    ensure_tenant_database,
    ensure_tenant_user,
    inventory_tenant,
    mark_deprovisioned,
    read_registry,
    read_stored_password,
    record_tenant,
    save_credentials_block,
    verify_final_backup,
)
from tasks.tenants import (
    NAME_MAX,
    NAME_MIN,
    RESERVED_NAMES,
    RESERVED_PREFIXES,
    Action,
    FieldChange,
    Manifest,
    ProvisionStep,
    StepResult,
    TenantNames,
    TenantRecord,
    ingress_manifest,
    limit_range_manifest,
    namespace_manifest,
    network_policy_manifest,
    resource_quota_manifest,
    results_table,
    role_binding_manifest,
    role_manifest,
    tenant_resources,
    tier_diff,
    validate_tenant_name,
)

TENANT_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_TENANT_DESCRIPTION = (
    f"Tenant name: a DNS-1123 label of {NAME_MIN}-{NAME_MAX} characters (a-z, 0-9, '-'), "
    "not reserved (default, kube-*, vibebench, admin, system, ...). Becomes "
    "{tenant}-vibebench (namespace), {tenant}_vibebench (database), {tenant}.{domain}."
)


# Reserved names and prefixes, refused by the API before a run exists.
RESERVED_SCHEMA = not_one_of(sorted(RESERVED_NAMES), RESERVED_PREFIXES)


def _tenant_name(value: object) -> str:
    try:
        return validate_tenant_name(value)
    except TenantNameInvalid as exc:
        raise ValueError(str(exc)) from None


class ProvisionTenantParams(BaseModel):
    """Parameters of provision-tenant (a form in the Prefect UI)."""

    tenant: str = Field(
        description=_TENANT_DESCRIPTION,
        min_length=NAME_MIN,
        max_length=NAME_MAX,
        pattern=TENANT_PATTERN,
        json_schema_extra=RESERVED_SCHEMA,
    )
    tier: Literal["starter", "pro", "enterprise"] = Field(
        default="starter", description="Quota and limits come from this tier (TenantTiers block)."
    )
    contact: str = Field(
        description="Who to call about this tenant (e-mail).",
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        max_length=254,
    )
    region: str = Field(
        default="us-central1",
        description="Data region of the tenant (recorded in the registry and as a label).",
        pattern=r"^[a-z]+(-[a-z]+)+[0-9]+$",
    )
    settings_block: str = Field(
        default="",
        description="Name of a 'VibeOps Tenant Settings' block; empty = embedded local defaults.",
    )
    tiers_block: str = Field(
        default="", description="Name of a 'VibeOps Tenant Tiers' block; empty = built-in tiers."
    )
    rehearse_failure_at: ProvisionStep | None = Field(
        default=None,
        description="Game-day drill only: fail on purpose when this step is reached, to prove "
        "the rollback. Leave empty for a real run.",
    )

    _check_tenant = field_validator("tenant", mode="before")(_tenant_name)


class DeprovisionTenantParams(BaseModel):
    """Parameters of deprovision-tenant (a form in the Prefect UI)."""

    tenant: str = Field(
        description=_TENANT_DESCRIPTION,
        min_length=NAME_MIN,
        max_length=NAME_MAX,
        pattern=TENANT_PATTERN,
        json_schema_extra=RESERVED_SCHEMA,
    )
    dry_run: bool = Field(
        default=True, description="Only plan and report; uncheck (and confirm) to remove."
    )
    confirm: str = Field(
        default="",
        max_length=NAME_MAX,
        description="Type the tenant name again to allow a real (non dry-run) deprovision.",
    )
    settings_block: str = Field(
        default="",
        description="Name of a 'VibeOps Tenant Settings' block; empty = embedded local defaults.",
    )
    namespace_timeout: Duration = Field(
        default=timedelta(minutes=5),
        description="How long to wait for the namespace to finish terminating.",
    )

    _check_tenant = field_validator("tenant", mode="before")(_tenant_name)

    @field_validator("namespace_timeout")
    @classmethod
    def _timeout_range(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=2):
            raise ValueError("namespace_timeout must be between 1 second and 2 hours")
        return value


class ProvisionReport(BaseModel):
    """What provision-tenant did, step by step (no secret values)."""

    tenant: str
    tier: str
    previous_tier: str | None
    host: str
    namespace: str
    database: str
    results: list[StepResult]
    tier_changes: list[FieldChange] = Field(default_factory=list)

    def actions(self) -> dict[str, str]:
        return {r.step: r.action.value for r in self.results}


class DeprovisionReport(BaseModel):
    """The deprovision plan, and what was removed when it was not a dry run."""

    tenant: str
    dry_run: bool
    plan: list[str]
    results: list[StepResult] = Field(default_factory=list)
    final_backup: dict[str, Any] = Field(default_factory=dict)


def _resource(names: TenantNames) -> dict[str, str]:
    return {
        "prefect.resource.id": f"vibeops.tenant.{names.tenant}",
        "prefect.resource.name": names.tenant,
    }


def _artifact_key(kind: str, tenant: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"{kind}-{tenant}".lower())


class _Steps:
    """Runs step tasks in order, remembering the current one (and failing on purpose in drills)."""

    def __init__(self, rehearse: ProvisionStep | None) -> None:
        self.rehearse = rehearse
        self.current: ProvisionStep | None = None
        self.results: list[StepResult] = []

    def run(self, step: ProvisionStep, call: Callable[[], Any]) -> Any:
        self.current = step
        if self.rehearse == step:
            raise RehearsedFailure(f"rehearsal: deliberate failure at step '{step.value}'")
        outcome = call()
        self.results.append(outcome if isinstance(outcome, StepResult) else outcome.result)
        return outcome


def _kube_manifests(names: TenantNames, params: ProvisionTenantParams, tier, net) -> dict:  # type: ignore[no-untyped-def]
    namespace = namespace_manifest(names, params.tier)
    namespace["metadata"]["labels"]["vibebench.io/region"] = params.region
    return {
        ProvisionStep.NAMESPACE: namespace,
        ProvisionStep.RESOURCE_QUOTA: resource_quota_manifest(names, tier),
        ProvisionStep.LIMIT_RANGE: limit_range_manifest(names, tier),
        ProvisionStep.NETWORK_POLICY: network_policy_manifest(names, net),
        ProvisionStep.ROLE: role_manifest(names),
        ProvisionStep.ROLE_BINDING: role_binding_manifest(names, net),
        ProvisionStep.INGRESS: ingress_manifest(names, net),
    }


@flow(
    name="provision-tenant",
    flow_run_name=run_name("provision-tenant-{tenant}"),
    description="Create or reconcile a tenant: namespace, quota, limits, network policy, RBAC, "
    "MySQL database and user, credentials, ingress, registry row. Transactional.",
    timeout_seconds=1800,
)
@form(ProvisionTenantParams)
def provision_tenant(params: ProvisionTenantParams) -> ProvisionReport:
    """Provision one tenant (idempotent; a changed tier is updated in place).

    Raises:
        TenantNameInvalid: the name is not allowed (nothing was touched).
        TenantStepFailed: a step failed; everything this run created or changed was rolled
            back. The message names the step.
    """
    logger = get_run_logger()
    validate_tenant_name(params.tenant)  # again: a model_construct()ed parameter skips pydantic
    settings = resolve_tenant_settings(params.settings_block)
    names = TenantNames.for_tenant(params.tenant, settings.domain)
    tiers = resolve_tiers(params.tiers_block)
    tier = tiers.tier(params.tier)
    admin = resolve_mysql(settings.mysql_block, "")
    cluster = resolve_kube_cluster(settings.kube_cluster_block)
    account_host = settings.mysql_user_host
    manifests = _kube_manifests(names, params, tier, settings.network)
    connection = {
        "MYSQL_HOST": settings.app_mysql_host or admin.host,
        "MYSQL_PORT": str(settings.app_mysql_port or admin.port),
        "MYSQL_DATABASE": names.database,
        "MYSQL_USER": names.mysql_user,
    }
    record = TenantRecord(
        tenant=names.tenant,
        tier=params.tier,
        contact=params.contact,
        region=params.region,
        spec={"tier": params.tier, "tier_spec": tier.model_dump(), "host": names.host},
        resources=tenant_resources(names),
    )
    inventory_args = (cluster, admin, names, account_host, list(manifests.values()))

    with tags(f"tenant:{names.tenant}"):
        previous = read_registry(admin, settings.ops_database, names.tenant)
        before = inventory_tenant(*inventory_args)
        previous_tier = previous.tier if previous and previous.status == "active" else None
        old_spec = (previous.spec.get("tier_spec") if previous else None) or None
        tier_changes = tier_diff(type(tier).model_validate(old_spec) if old_spec else None, tier)
        steps = _Steps(params.rehearse_failure_at)
        try:
            with transaction():
                for step in (
                    ProvisionStep.NAMESPACE,
                    ProvisionStep.RESOURCE_QUOTA,
                    ProvisionStep.LIMIT_RANGE,
                    ProvisionStep.NETWORK_POLICY,
                    ProvisionStep.ROLE,
                    ProvisionStep.ROLE_BINDING,
                ):
                    manifest = manifests[step]
                    steps.run(
                        step,
                        lambda m=manifest, s=step.value: apply_object(cluster, m, names.tenant, s),  # type: ignore[misc]
                    )
                steps.run(
                    ProvisionStep.MYSQL_DATABASE,
                    lambda: ensure_tenant_database(
                        admin, names, ProvisionStep.MYSQL_DATABASE.value
                    ),
                )
                stored = read_stored_password(names)
                user = steps.run(
                    ProvisionStep.MYSQL_USER,
                    lambda: ensure_tenant_user(
                        admin, names, account_host, stored, ProvisionStep.MYSQL_USER.value
                    ),
                )
                steps.run(
                    ProvisionStep.CREDENTIALS_SECRET,
                    lambda: apply_credentials_secret(
                        cluster,
                        names,
                        connection,
                        user.password,
                        ProvisionStep.CREDENTIALS_SECRET.value,
                    ),
                )
                steps.run(
                    ProvisionStep.CREDENTIALS_BLOCK,
                    lambda: save_credentials_block(
                        names, connection, user.password, ProvisionStep.CREDENTIALS_BLOCK.value
                    ),
                )
                steps.run(
                    ProvisionStep.INGRESS,
                    lambda: apply_object(
                        cluster,
                        manifests[ProvisionStep.INGRESS],
                        names.tenant,
                        ProvisionStep.INGRESS.value,
                    ),
                )
                steps.run(
                    ProvisionStep.REGISTRY,
                    lambda: record_tenant(
                        admin, settings.ops_database, record, ProvisionStep.REGISTRY.value
                    ),
                )
        except Exception as exc:
            _provision_failed(names, params, steps, exc, before, inventory_tenant(*inventory_args))
            raise TenantStepFailed(
                f"provision-tenant {names.tenant}: step "
                f"'{steps.current.value if steps.current else 'preflight'}' failed: "
                f"{type(exc).__name__}: {exc}. Everything this run created or changed was "
                "rolled back; fix the cause and re-run"
            ) from exc

    report = ProvisionReport(
        tenant=names.tenant,
        tier=params.tier,
        previous_tier=previous_tier,
        host=names.host,
        namespace=names.namespace,
        database=names.database,
        results=steps.results,
        tier_changes=tier_changes if previous_tier else [],
    )
    _provision_succeeded(report)
    logger.info(
        "tenant %s provisioned: %s",
        names.tenant,
        ", ".join(f"{step}={action}" for step, action in report.actions().items()),
    )
    return report


def _provision_succeeded(report: ProvisionReport) -> None:
    changed = [r.step for r in report.results if r.action is not Action.UNCHANGED]
    tier_line = (
        f"{report.previous_tier} -> {report.tier}"
        if report.previous_tier and report.previous_tier != report.tier
        else report.tier
    )
    lines = [
        f"# Tenant `{report.tenant}` provisioned"
        + (" (no changes)" if not changed else f" ({len(changed)} changed)"),
        "",
        f"- tier: **{tier_line}**",
        f"- host: `{report.host}` · namespace: `{report.namespace}` · "
        f"database: `{report.database}`",
        "",
        results_table(report.results),
    ]
    if report.tier_changes:
        lines += ["", "## Tier changes", ""]
        lines += [f"- `{change}`" for change in report.tier_changes]
    create_markdown_artifact(
        key=_artifact_key("provision-tenant", report.tenant),
        markdown="\n".join(lines),
        description="provision-tenant result",
    )
    emit_event(
        event="vibeops.tenant.provisioned",
        resource={
            "prefect.resource.id": f"vibeops.tenant.{report.tenant}",
            "prefect.resource.name": report.tenant,
        },
        payload={
            "tenant": report.tenant,
            "tier": report.tier,
            "previous_tier": report.previous_tier,
            "host": report.host,
            "changed": changed,
            "actions": report.actions(),
        },
    )


def _provision_failed(
    names: TenantNames,
    params: ProvisionTenantParams,
    steps: _Steps,
    exc: BaseException,
    before: TenantInventory,
    after: TenantInventory,
) -> None:
    step = steps.current.value if steps.current else "preflight"
    undone = [r.step for r in steps.results if r.action in (Action.CREATED, Action.UPDATED)]
    leftovers = sorted(set(after.existing()) - set(before.existing()))
    missing = sorted(set(before.existing()) - set(after.existing()))
    lines = [
        f"# Tenant `{names.tenant}`: provisioning FAILED at step `{step}`",
        "",
        f"`{type(exc).__name__}`: {exc}",
        "",
        f"Rolled back (reverse order): {', '.join(reversed(undone)) or 'nothing to undo'}.",
        "",
        "Rollback check: "
        + (
            "every resource is as before this run."
            if not leftovers and not missing
            else f"left over {leftovers}, missing {missing}: look at them by hand."
        ),
        "",
        "## Steps completed before the failure",
        "",
        results_table(steps.results),
    ]
    create_markdown_artifact(
        key=_artifact_key("provision-tenant", names.tenant),
        markdown="\n".join(lines),
        description="provision-tenant result",
    )
    emit_event(
        event="vibeops.tenant.provision-failed",
        resource=_resource(names),
        payload={
            "tenant": names.tenant,
            "tier": params.tier,
            "step": step,
            "error": type(exc).__name__,
            "message": str(exc)[:500],
            "rolled_back": list(reversed(undone)),
            "rollback_leftovers": leftovers,
        },
    )


# -- deprovision -------------------------------------------------------------------------------


def _plan(names: TenantNames, inventory: TenantInventory, has_db: bool) -> list[str]:
    plan = []
    if has_db:
        plan.append(
            f"final backup of MySQL database `{names.database}` ({inventory.tables} tables) "
            "with backup-mysql, verified in every region"
        )
    ingress = f"Ingress {names.namespace}/{names.ingress}"
    if inventory.kube.get(ingress):
        plan.append(f"delete {ingress} (host {names.host})")
    for kind, items in inventory.workloads.items():
        plan.append(f"delete {kind} {', '.join(items)} in {names.namespace}")
    if inventory.kube.get(f"Namespace {names.namespace}"):
        inside = [ref for ref, present in inventory.kube.items() if present and ref != ingress]
        plan.append(f"delete namespace {names.namespace} (with {', '.join(inside)})")
    if inventory.user:
        plan.append(f"drop MySQL user {names.mysql_user}")
    if has_db:
        plan.append(f"drop MySQL database {names.database}")
    if inventory.credentials_block:
        plan.append(f"delete Prefect secret block {names.credentials_block}")
    plan.append("mark the registry row deprovisioned")
    return plan


@flow(
    name="deprovision-tenant",
    flow_run_name=run_name("deprovision-tenant-{tenant}"),
    description="Plan (dry run by default), take and verify a final backup, then remove a "
    "tenant: ingress, workloads, namespace, MySQL user and database; registry row kept.",
    timeout_seconds=6 * 3600,
)
@form(DeprovisionTenantParams)
def deprovision_tenant(params: DeprovisionTenantParams) -> DeprovisionReport:
    """Deprovision one tenant known to the registry.

    Raises:
        TenantUnknown: the registry has no active row for the tenant.
        DeprovisionRefused: confirm does not match, or the final backup is not committed.
    """
    logger = get_run_logger()
    validate_tenant_name(params.tenant)
    settings = resolve_tenant_settings(params.settings_block)
    names = TenantNames.for_tenant(params.tenant, settings.domain)
    admin = resolve_mysql(settings.mysql_block, "")
    cluster = resolve_kube_cluster(settings.kube_cluster_block)
    host = settings.mysql_user_host
    if params.confirm and params.confirm != params.tenant:
        _refused(names, f"confirm {params.confirm!r} does not match the tenant name")
        raise DeprovisionRefused(
            f"confirm must equal the tenant name {params.tenant!r}, got {params.confirm!r}; "
            "nothing was touched"
        )

    with tags(f"tenant:{names.tenant}"):
        record = read_registry(admin, settings.ops_database, names.tenant)
        if record is None or record.status != "active":
            why = "does not know" if record is None else "has already deprovisioned"
            _refused(names, f"the registry {why} this tenant")
            raise TenantUnknown(
                f"the tenants registry ({settings.ops_database}) {why} tenant {names.tenant!r}; "
                "check the name (provision-tenant adds tenants to the registry)"
            )
        manifests: list[Manifest] = [
            namespace_manifest(names, record.tier),
            *(
                {"kind": kind, "metadata": {"name": name, "namespace": names.namespace}}
                for kind, name in (
                    ("ResourceQuota", names.resource_quota),
                    ("LimitRange", names.limit_range),
                    ("NetworkPolicy", names.network_policy),
                    ("Role", names.role),
                    ("RoleBinding", names.role_binding),
                    ("Secret", names.credentials_secret),
                    ("Ingress", names.ingress),
                )
            ),
        ]
        inventory = inventory_tenant(cluster, admin, names, host, manifests)
        if f"Namespace {names.namespace}" in inventory.foreign:
            _refused(names, f"namespace {names.namespace} belongs to someone else")
            raise TenantResourceConflict(
                f"namespace {names.namespace} is not labelled as tenant {names.tenant}'s; "
                "nothing was touched"
            )
        plan = _plan(names, inventory, inventory.database)
        if params.dry_run:
            _deprovision_artifact(names, plan, [], {}, dry_run=True)
            emit_event(
                event="vibeops.tenant.deprovision-planned",
                resource=_resource(names),
                payload={"tenant": names.tenant, "plan": plan},
            )
            return DeprovisionReport(tenant=names.tenant, dry_run=True, plan=plan)
        if params.confirm != params.tenant:
            _refused(names, "confirm is empty")
            raise DeprovisionRefused(
                f"a real deprovision needs confirm = {params.tenant!r} (the tenant name typed "
                "again); nothing was touched"
            )

        final_backup: dict[str, Any] = {}
        if inventory.database:
            manifest = backup_mysql(
                source=names.database,
                database=names.database,
                connection_block=settings.mysql_block,
                store_block=settings.store_block,
            )
            uris = verify_final_backup(resolve_store(settings.store_block), manifest)
            final_backup = {
                "backup_id": manifest.backup_id,
                "source": manifest.source,
                "consistent_at": manifest.consistent_at.isoformat(),
                "manifests": uris,
            }
            logger.info("final backup %s committed in %d region(s)", manifest.backup_id, len(uris))
        results = [
            delete_ingress(cluster, names),
            delete_workloads(cluster, names),
            delete_namespace(cluster, names, params.namespace_timeout.total_seconds()),
            drop_tenant_user(admin, names, host),
            drop_tenant_database(admin, names),
            delete_credentials_block(names),
            mark_deprovisioned(admin, settings.ops_database, record, final_backup),
        ]
    _deprovision_artifact(names, plan, results, final_backup, dry_run=False)
    emit_event(
        event="vibeops.tenant.deprovisioned",
        resource=_resource(names),
        payload={
            "tenant": names.tenant,
            "final_backup_id": final_backup.get("backup_id"),
            "removed": [r.resource for r in results if r.action is Action.DELETED],
        },
    )
    return DeprovisionReport(
        tenant=names.tenant, dry_run=False, plan=plan, results=results, final_backup=final_backup
    )


def _refused(names: TenantNames, why: str) -> None:
    emit_event(
        event="vibeops.tenant.deprovision-refused",
        resource=_resource(names),
        payload={"tenant": names.tenant, "reason": why},
    )


def _deprovision_artifact(
    names: TenantNames,
    plan: list[str],
    results: list[StepResult],
    final_backup: dict[str, Any],
    dry_run: bool,
) -> None:
    title = "deprovision plan (dry run: nothing removed)" if dry_run else "deprovisioned"
    lines = [f"# Tenant `{names.tenant}`: {title}", "", "## Plan", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(plan, 1)]
    if final_backup:
        lines += [
            "",
            f"Final backup `{final_backup['backup_id']}` (consistent at "
            f"{final_backup['consistent_at']}), manifests: "
            + ", ".join(f"`{uri}`" for uri in final_backup["manifests"]),
        ]
    if results:
        lines += ["", "## Done", "", results_table(results)]
    if dry_run:
        lines += ["", f"Run again with dry_run off and confirm = `{names.tenant}` to remove."]
    create_markdown_artifact(
        key=_artifact_key("deprovision-tenant", names.tenant),
        markdown="\n".join(lines),
        description="deprovision-tenant plan/result",
    )
