"""Prefect tasks of provision-tenant and deprovision-tenant, with their rollback hooks.

Provisioning steps run inside one `transaction()` in the flow. Each step task records what it
did in its own transaction (`created`, `updated` with the previous state, or `unchanged`),
and its `on_rollback` hook undoes exactly that: a created resource is deleted, an updated
one is put back, an unchanged one is left alone.

Steps inside the transaction have **no Prefect retries**: in Prefect 3.9 a failed attempt
of a task inside `transaction()` rolls the enclosing transaction back at once, even when a
retry then succeeds. Transient errors are retried inside the task instead
(`tasks.tenants.call_with_retries`). Deprovision tasks run outside any transaction and use
ordinary task retries.

Secrets: the tenant password travels between tasks as a `SecretStr`, in memory only
(`persist_result=False`, `NO_CACHE`); it is never logged, never put in a StepResult, an
artifact or an event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from prefect.transactions import get_transaction
from pydantic import BaseModel, SecretStr

from blocks.backup_store import BackupStore
from blocks.mysql import MySQLConnection
from tasks import kube_tenants, mysql_admin
from tasks.errors import DeprovisionRefused, StorageError
from tasks.manifest import BackupManifest, parse_manifest
from tasks.storage import open_store
from tasks.tenants import (
    LABEL_TENANT,
    Action,
    FieldChange,
    Manifest,
    StepResult,
    TenantNames,
    TenantRecord,
    call_with_retries,
    credentials_secret_manifest,
)

if TYPE_CHECKING:
    from prefect.transactions import Transaction

    from blocks.kube import KubeCluster

_STEP_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
NAMESPACE_DELETE_TIMEOUT = 300.0


def _transient(exc: BaseException) -> bool:
    return kube_tenants.is_transient(exc) or mysql_admin.is_transient(exc)


def _retry_if_transient(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
    """retry_condition_fn for deprovision tasks: only API blips and unreachable servers."""
    try:
        state.result()
    except Exception as exc:
        return _transient(exc)
    return False


_RETRYING: dict[str, Any] = {
    **_STEP_OPTIONS,
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_if_transient,
}


def _remember(**values: Any) -> None:
    txn = get_transaction()
    if txn is not None:
        for key, value in values.items():
            txn.set(key, value)


def _log_result(result: StepResult) -> StepResult:
    get_run_logger().info("%s %s: %s", result.step, result.resource, result.summary())
    return result


# -- Kubernetes objects ------------------------------------------------------------------------


@task(name="apply-tenant-object", task_run_name="apply-{step}", **_STEP_OPTIONS)
def apply_object(cluster: KubeCluster, manifest: Manifest, tenant: str, step: str) -> StepResult:
    """Create-if-absent / compare / update one Kubernetes object of the tenant."""
    with kube_tenants.api_client(cluster) as api:
        outcome = call_with_retries(
            lambda: kube_tenants.ensure_object(api, manifest, tenant), _transient
        )
    _remember(cluster=cluster, outcome=outcome, manifest=manifest)
    return _log_result(StepResult(step, outcome.ref, outcome.action, outcome.changes))


@task(
    name="apply-tenant-credentials-secret",
    task_run_name="apply-credentials-secret",
    **_STEP_OPTIONS,
)
def apply_credentials_secret(
    cluster: KubeCluster,
    names: TenantNames,
    connection: dict[str, str],
    password: SecretStr,
    step: str,
) -> StepResult:
    """The Kubernetes Secret with the tenant's MySQL credentials (built here, never passed)."""
    manifest = credentials_secret_manifest(
        names, {**connection, "MYSQL_PASSWORD": password.get_secret_value()}
    )
    with kube_tenants.api_client(cluster) as api:
        outcome = call_with_retries(
            lambda: kube_tenants.ensure_object(api, manifest, names.tenant), _transient
        )
    _remember(cluster=cluster, outcome=outcome, manifest=manifest)
    return _log_result(StepResult(step, outcome.ref, outcome.action, outcome.changes))


def _undo_kube(txn: Transaction) -> None:
    outcome: kube_tenants.EnsureOutcome | None = txn.get("outcome", None)
    if outcome is None or outcome.action not in (Action.CREATED, Action.UPDATED):
        return
    manifest: Manifest = txn.get("manifest")
    meta = manifest["metadata"]
    with kube_tenants.api_client(txn.get("cluster")) as api:
        previous = outcome.previous
        if outcome.action is Action.UPDATED and previous is not None:
            call_with_retries(lambda: kube_tenants.restore_object(api, previous), _transient)
        elif manifest["kind"] == "Namespace":
            call_with_retries(
                lambda: kube_tenants.delete_namespace_and_wait(
                    api, meta["name"], NAMESPACE_DELETE_TIMEOUT
                ),
                _transient,
            )
        else:
            call_with_retries(
                lambda: kube_tenants.delete_object(
                    api, manifest["kind"], meta["name"], meta.get("namespace")
                ),
                _transient,
            )


apply_object.on_rollback(_undo_kube)
apply_credentials_secret.on_rollback(_undo_kube)


# -- MySQL database and user -------------------------------------------------------------------


@task(name="create-tenant-database", task_run_name="mysql-database", **_STEP_OPTIONS)
def ensure_tenant_database(admin: MySQLConnection, names: TenantNames, step: str) -> StepResult:
    """CREATE DATABASE `<tenant>_vibebench` unless it exists."""
    created = call_with_retries(
        lambda: mysql_admin.create_database(admin, names.database), _transient
    )
    _remember(admin=admin, database=names.database, created=created)
    action = Action.CREATED if created else Action.UNCHANGED
    return _log_result(StepResult(step, f"mysql database {names.database}", action))


@ensure_tenant_database.on_rollback
def _drop_created_database(txn: Transaction) -> None:
    if txn.get("created", False):
        admin: MySQLConnection = txn.get("admin")
        call_with_retries(lambda: mysql_admin.drop_database(admin, txn.get("database")), _transient)


@dataclass(frozen=True)
class UserOutcome:
    """The user step's result plus the password to hand to the credential steps."""

    result: StepResult
    password: SecretStr


@task(name="ensure-tenant-mysql-user", task_run_name="mysql-user", **_STEP_OPTIONS)
def ensure_tenant_user(
    admin: MySQLConnection,
    names: TenantNames,
    account_host: str,
    stored_password: SecretStr | None,
    step: str,
) -> UserOutcome:
    """The tenant's MySQL account with privileges on its own database only.

    A new account gets the stored password (if credentials survived) or a new random one.
    An existing account keeps its password when the stored one still logs in; otherwise
    the password is reset (reported as an update).
    """
    user = names.mysql_user
    exists = call_with_retries(
        lambda: mysql_admin.user_exists(admin, user, account_host), _transient
    )
    changes: list[FieldChange] = []
    note = ""
    if not exists:
        password = stored_password or mysql_admin.generate_password()
        mysql_admin.create_user(admin, user, account_host, password)
        _remember(admin=admin, user=user, host=account_host, created=True)
        action = Action.CREATED
    else:
        _remember(admin=admin, user=user, host=account_host, created=False)
        if stored_password is not None and mysql_admin.can_login(admin, user, stored_password):
            password = stored_password
            action = Action.UNCHANGED
        else:
            password = stored_password or mysql_admin.generate_password()
            mysql_admin.set_password(admin, user, account_host, password)
            changes.append(FieldChange("password", "***", "***"))
            note = "password reset: no working stored credential"
            action = Action.UPDATED
    try:
        changes += call_with_retries(
            lambda: mysql_admin.ensure_grants(admin, user, account_host, names.database),
            _transient,
        )
    except Exception:
        if action is Action.CREATED:
            # Nothing of this step may survive its own failure: the hook will not run for it.
            mysql_admin.drop_user(admin, user, account_host)
        raise
    if changes and action is Action.UNCHANGED:
        action = Action.UPDATED
    result = StepResult(step, f"mysql user {user}@{account_host}", action, changes, note)
    return UserOutcome(result=_log_result(result), password=password)


@ensure_tenant_user.on_rollback
def _drop_created_user(txn: Transaction) -> None:
    if txn.get("created", False):
        admin: MySQLConnection = txn.get("admin")
        call_with_retries(
            lambda: mysql_admin.drop_user(admin, txn.get("user"), txn.get("host")), _transient
        )


# -- the Prefect Secret block with the credentials ---------------------------------------------


def _read_block(name: str) -> dict[str, str] | None:
    try:
        value = Secret.load(name, _sync=True).get()  # type: ignore[call-arg,union-attr]
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@task(name="read-tenant-credentials", **_STEP_OPTIONS)
def read_stored_password(names: TenantNames) -> SecretStr | None:
    """The password in the tenant's Prefect Secret block, if the block exists."""
    value = _read_block(names.credentials_block)
    if value and value.get("MYSQL_PASSWORD"):
        return SecretStr(value["MYSQL_PASSWORD"])
    return None


@task(name="save-tenant-credentials-block", task_run_name="credentials-block", **_STEP_OPTIONS)
def save_credentials_block(
    names: TenantNames, connection: dict[str, str], password: SecretStr, step: str
) -> StepResult:
    """Save the credentials as a Prefect Secret block `tenant-<tenant>-mysql`."""
    desired = {**connection, "MYSQL_PASSWORD": password.get_secret_value()}
    previous = _read_block(names.credentials_block)
    resource = f"prefect secret block {names.credentials_block}"
    _remember(name=names.credentials_block, previous=previous, action=None)
    if previous == desired:
        return _log_result(StepResult(step, resource, Action.UNCHANGED))
    Secret(value=desired).save(names.credentials_block, overwrite=True)  # type: ignore[arg-type]
    action = Action.CREATED if previous is None else Action.UPDATED
    _remember(action=action)
    changes = [
        FieldChange(
            f"value.{key}",
            None if previous is None or key not in previous else "***",
            "***",
        )
        for key in sorted(desired)
        if previous is None or previous.get(key) != desired[key]
    ]
    return _log_result(StepResult(step, resource, action, [] if previous is None else changes))


@save_credentials_block.on_rollback
def _undo_credentials_block(txn: Transaction) -> None:
    action = txn.get("action", None)
    if action is Action.CREATED:
        Secret.delete(txn.get("name"))
    elif action is Action.UPDATED:
        Secret(value=txn.get("previous")).save(txn.get("name"), overwrite=True)  # type: ignore[arg-type]


# -- the registry ------------------------------------------------------------------------------


@task(name="read-tenant-registry", **_RETRYING)
def read_registry(admin: MySQLConnection, ops_database: str, tenant: str) -> TenantRecord | None:
    """Create the registry table if needed and return the tenant's row (or None)."""
    mysql_admin.ensure_registry(admin, ops_database)
    return mysql_admin.read_tenant(admin, ops_database, tenant)


@task(name="record-tenant", task_run_name="registry", **_STEP_OPTIONS)
def record_tenant(
    admin: MySQLConnection, ops_database: str, record: TenantRecord, step: str
) -> StepResult:
    """Insert or update the tenant's registry row (status active)."""
    previous = call_with_retries(
        lambda: mysql_admin.read_tenant(admin, ops_database, record.tenant), _transient
    )
    _remember(
        admin=admin, ops=ops_database, tenant_name=record.tenant, previous=previous, written=False
    )
    resource = f"registry row {ops_database}.{mysql_admin.REGISTRY_TABLE}/{record.tenant}"
    if previous is not None and previous.same_content(record):
        return _log_result(StepResult(step, resource, Action.UNCHANGED))
    now = datetime.now(UTC)
    row = record.model_copy(
        update={
            "created_at": previous.created_at if previous else now,
            "updated_at": now,
            "deprovisioned_at": None,
        }
    )
    mysql_admin.write_tenant(admin, ops_database, row)
    _remember(written=True)
    changes = []
    if previous is not None:
        before, after = previous.model_dump(), row.model_dump()
        for key in ("tier", "contact", "region", "status", "spec", "resources"):
            if before[key] != after[key]:
                changes.append(
                    FieldChange(
                        key,
                        json.dumps(before[key], sort_keys=True)[:200],
                        json.dumps(after[key], sort_keys=True)[:200],
                    )
                )
    action = Action.CREATED if previous is None else Action.UPDATED
    return _log_result(StepResult(step, resource, action, changes))


@record_tenant.on_rollback
def _undo_record(txn: Transaction) -> None:
    if not txn.get("written", False):
        return
    admin: MySQLConnection = txn.get("admin")
    previous: TenantRecord | None = txn.get("previous")
    if previous is None:
        mysql_admin.delete_tenant_row(admin, txn.get("ops"), txn.get("tenant_name"))
    else:
        mysql_admin.write_tenant(admin, txn.get("ops"), previous)


# -- inventory (deprovision plan, rollback verification) ---------------------------------------


class TenantInventory(BaseModel):
    """What exists of a tenant right now, resource by resource."""

    kube: dict[str, bool]
    foreign: list[str]
    workloads: dict[str, list[str]]
    database: bool
    tables: int
    user: bool
    credentials_block: bool

    def existing(self) -> list[str]:
        out = [ref for ref, present in self.kube.items() if present]
        out += [f"{kind} {name}" for kind, items in self.workloads.items() for name in items]
        if self.database:
            out.append("mysql database")
        if self.user:
            out.append("mysql user")
        if self.credentials_block:
            out.append("prefect secret block")
        return out


@task(name="inventory-tenant", **_RETRYING)
def inventory_tenant(
    cluster: KubeCluster,
    admin: MySQLConnection,
    names: TenantNames,
    account_host: str,
    manifests: list[Manifest],
) -> TenantInventory:
    """Which of the tenant's resources exist (and which carry another owner's label)."""
    present: dict[str, bool] = {}
    foreign: list[str] = []
    workloads: dict[str, list[str]] = {}
    with kube_tenants.api_client(cluster) as api:
        for manifest in manifests:
            meta = manifest["metadata"]
            live = kube_tenants.read_object(
                api, manifest["kind"], meta["name"], meta.get("namespace")
            )
            ref = kube_tenants.object_ref(manifest)
            present[ref] = live is not None
            owner = ((live or {}).get("metadata", {}).get("labels") or {}).get(LABEL_TENANT)
            if live is not None and owner != names.tenant:
                foreign.append(ref)
        if present.get(f"Namespace {names.namespace}"):
            workloads = kube_tenants.list_workloads(api, names.namespace)
    database = mysql_admin.database_exists(admin, names.database)
    return TenantInventory(
        kube=present,
        foreign=foreign,
        workloads=workloads,
        database=database,
        tables=mysql_admin.table_count(admin, names.database) if database else 0,
        user=mysql_admin.user_exists(admin, names.mysql_user, account_host),
        credentials_block=_read_block(names.credentials_block) is not None,
    )


# -- deprovisioning ----------------------------------------------------------------------------


@task(name="verify-final-backup", **_RETRYING)
def verify_final_backup(store: BackupStore, manifest: BackupManifest) -> list[str]:
    """Read the final backup's manifest back from every region; returns their URIs.

    Raises:
        DeprovisionRefused: a region lacks the manifest (the backup is not committed there).
    """
    uris = []
    for destination in store.destinations:
        region = open_store(destination)
        try:
            stored = parse_manifest(region.read_bytes(manifest.manifest_key))
        except (StorageError, ValueError) as exc:
            raise DeprovisionRefused(
                f"final backup {manifest.backup_id} has no readable manifest in region "
                f"{region.region} ({exc}); nothing was removed. Fix the backup store and re-run"
            ) from exc
        if stored.backup_id != manifest.backup_id or stored.objects != manifest.objects:
            raise DeprovisionRefused(
                f"final backup manifest in region {region.region} does not match "
                f"{manifest.backup_id}; nothing was removed"
            )
        uris.append(region.uri(manifest.manifest_key))
    return uris


def _owned_or_absent(api: Any, kind: str, name: str, namespace: str | None, tenant: str) -> bool:
    live = kube_tenants.read_object(api, kind, name, namespace)
    if live is None:
        return False
    kube_tenants.check_owner(live, tenant)
    return True


@task(name="delete-tenant-ingress", **_RETRYING)
def delete_ingress(cluster: KubeCluster, names: TenantNames) -> StepResult:
    with kube_tenants.api_client(cluster) as api:
        if _owned_or_absent(api, "Ingress", names.ingress, names.namespace, names.tenant):
            kube_tenants.delete_object(api, "Ingress", names.ingress, names.namespace)
            action = Action.DELETED
        else:
            action = Action.ABSENT
    return _log_result(StepResult("ingress", f"Ingress {names.namespace}/{names.ingress}", action))


@task(name="delete-tenant-workloads", **_RETRYING)
def delete_workloads(cluster: KubeCluster, names: TenantNames) -> StepResult:
    with kube_tenants.api_client(cluster) as api:
        if not _owned_or_absent(api, "Namespace", names.namespace, None, names.tenant):
            return _log_result(StepResult("workloads", names.namespace, Action.ABSENT))
        removed = kube_tenants.delete_workloads(api, names.namespace)
    listed = "; ".join(f"{kind}: {', '.join(items)}" for kind, items in removed.items())
    action = Action.DELETED if removed else Action.ABSENT
    return _log_result(StepResult("workloads", names.namespace, action, note=listed))


@task(name="delete-tenant-namespace", **_RETRYING)
def delete_namespace(
    cluster: KubeCluster, names: TenantNames, timeout_seconds: float
) -> StepResult:
    with kube_tenants.api_client(cluster) as api:
        if not _owned_or_absent(api, "Namespace", names.namespace, None, names.tenant):
            return _log_result(
                StepResult("namespace", f"Namespace {names.namespace}", Action.ABSENT)
            )
        kube_tenants.delete_namespace_and_wait(api, names.namespace, timeout_seconds)
    return _log_result(StepResult("namespace", f"Namespace {names.namespace}", Action.DELETED))


@task(name="drop-tenant-mysql-user", **_RETRYING)
def drop_tenant_user(admin: MySQLConnection, names: TenantNames, account_host: str) -> StepResult:
    existed = mysql_admin.drop_user(admin, names.mysql_user, account_host)
    return _log_result(
        StepResult(
            "mysql-user",
            f"mysql user {names.mysql_user}@{account_host}",
            Action.DELETED if existed else Action.ABSENT,
        )
    )


@task(name="drop-tenant-database", **_RETRYING)
def drop_tenant_database(admin: MySQLConnection, names: TenantNames) -> StepResult:
    existed = mysql_admin.drop_database(admin, names.database)
    return _log_result(
        StepResult(
            "mysql-database",
            f"mysql database {names.database}",
            Action.DELETED if existed else Action.ABSENT,
        )
    )


@task(name="delete-tenant-credentials-block", **_RETRYING)
def delete_credentials_block(names: TenantNames) -> StepResult:
    existed = _read_block(names.credentials_block) is not None
    if existed:
        Secret.delete(names.credentials_block)
    return _log_result(
        StepResult(
            "credentials-block",
            f"prefect secret block {names.credentials_block}",
            Action.DELETED if existed else Action.ABSENT,
        )
    )


@task(name="mark-tenant-deprovisioned", **_RETRYING)
def mark_deprovisioned(
    admin: MySQLConnection, ops_database: str, record: TenantRecord, final_backup: dict[str, Any]
) -> StepResult:
    now = datetime.now(UTC)
    row = record.model_copy(
        update={
            "status": "deprovisioned",
            "updated_at": now,
            "deprovisioned_at": now,
            "spec": {**record.spec, "final_backup": final_backup},
        }
    )
    mysql_admin.write_tenant(admin, ops_database, row)
    return _log_result(
        StepResult(
            "registry",
            f"registry row {ops_database}.{mysql_admin.REGISTRY_TABLE}/{record.tenant}",
            Action.UPDATED,
            [FieldChange("status", record.status, "deprovisioned")],
        )
    )
