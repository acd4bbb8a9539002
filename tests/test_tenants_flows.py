"""provision-tenant / deprovision-tenant end to end: real MariaDB, the Kubernetes API stand-in
(kubernetes-validate on every object), local backup folders, the session's Prefect API."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any

import pymysql
import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, LogFilter
from prefect.exceptions import ParameterTypeError
from pydantic import ValidationError

from blocks import (
    BackupStore,
    LocalFolderDestination,
    MySQLConnection,
    TenantSettings,
    TenantTiers,
)
from blocks.kube import KubeCluster
from flows.forms import params_of
from flows.tenants import (
    DeprovisionTenantParams,
    ProvisionTenantParams,
    deprovision_tenant,
    provision_tenant,
)
from tasks import mysql_admin
from tasks.catalog import newest_committed_backup
from tasks.errors import (
    DeprovisionRefused,
    TenantStepFailed,
    TenantUnknown,
)
from tasks.restore import restore_logical_dump
from tasks.storage import open_store
from tasks.tenants import Action, ProvisionStep, TenantNames

pytestmark = [pytest.mark.mysql, pytest.mark.kube]

KUBE_KINDS = (
    "Namespace",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "Role",
    "RoleBinding",
    "Secret",
    "Ingress",
)


def _save(block: Any, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    block.save(name, overwrite=True)
    return name


class Env:
    """One test's world: the stand-in, the MariaDB root block, a settings block."""

    def __init__(self, kube_api: Any, root: MySQLConnection, backups: Path) -> None:
        self.kube = kube_api
        self.root = root
        self.ops = f"ops_{uuid.uuid4().hex[:8]}"
        mysql_admin.ensure_registry(root, self.ops)  # ops infrastructure, set up once
        self.store = BackupStore(
            destinations=[
                LocalFolderDestination(region="local-a", path=str(backups / "a")),
                LocalFolderDestination(region="local-b", path=str(backups / "b")),
            ]
        )
        self.settings = TenantSettings(
            mysql_block=_save(root, "tn-root"),
            store_block=_save(self.store, "tn-store"),
            kube_cluster_block=_save(KubeCluster(credentials=kube_api.credentials()), "tn-kube"),
            ops_database=self.ops,
            domain="example.test",
        )
        self.settings_block = _save(self.settings, "tn-settings")

    def provision(self, tenant: str, tier: str = "starter", **extra: Any):
        params = ProvisionTenantParams(
            tenant=tenant,
            tier=tier,
            contact="ops@example.test",
            region="europe-west1",
            settings_block=self.settings_block,
            **extra,
        )
        return provision_tenant(**params_of(params))

    def deprovision(self, tenant: str, **extra: Any):
        params = DeprovisionTenantParams(tenant=tenant, settings_block=self.settings_block, **extra)
        return deprovision_tenant(**params_of(params))

    def snapshot(self) -> dict[str, Any]:
        """Everything a tenant run could create or change, for before/after comparisons."""
        kube = {}
        for kind in KUBE_KINDS:
            for obj in self.kube.list(kind):
                meta = obj["metadata"]
                key = f"{kind} {meta.get('namespace', '')}/{meta['name']}"
                kube[key] = (meta.get("uid"), obj.get("spec"), meta.get("labels"))
        conn = pymysql.connect(**self.root.pymysql_kwargs())
        with conn.cursor() as cur:
            cur.execute("SELECT schema_name FROM information_schema.schemata ORDER BY 1")
            dbs = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT User, Host FROM mysql.user ORDER BY 1, 2")
            users = list(cur.fetchall())
            cur.execute("SELECT grantee, table_schema FROM information_schema.schema_privileges")
            grants = sorted(cur.fetchall())
            registry = []
            if self.ops in dbs:
                cur.execute(f"SELECT * FROM `{self.ops}`.`{mysql_admin.REGISTRY_TABLE}`")
                registry = sorted(cur.fetchall())
        conn.close()
        return {"kube": kube, "dbs": dbs, "users": users, "grants": grants, "registry": registry}


@pytest.fixture
def env(kube_api, mysql_root: MySQLConnection, tmp_path: Path) -> Env:
    return Env(kube_api, mysql_root, tmp_path / "backups")


def _tenant() -> str:
    return f"tn-{uuid.uuid4().hex[:8]}"


def _block_password(names: TenantNames) -> str:
    return Secret.load(names.credentials_block).get()["MYSQL_PASSWORD"]


def _connect_as(root: MySQLConnection, user: str, password: str, database: str | None = None):
    return pymysql.connect(
        host=root.host,
        port=root.port,
        user=user,
        password=password,
        database=database,
        autocommit=True,
    )


def _run_texts(flow_run_ids: list[uuid.UUID], resource_prefixes: list[str]) -> str:
    """Every log line and artifact of the flow runs, and the events of the resources."""
    with get_client(sync_client=True) as client:
        logs: list[Any] = []
        while True:
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id={"any_": flow_run_ids}),
                limit=200,
                offset=len(logs),
            )
            logs += page
            if len(page) < 200:
                break
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id={"any_": flow_run_ids}), limit=200
        )
        events = client.request(
            "POST",
            "/events/filter",
            json={"filter": {"resource": {"id_prefix": resource_prefixes}}, "limit": 50},
        )
    parts = [log.message for log in logs]
    parts += [f"{a.key} {a.data} {a.description}" for a in artifacts]
    parts.append(events.text)
    return "\n".join(parts)


def _flow_run_ids(names: tuple[str, ...]) -> list[uuid.UUID]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name={"any_": list(names)}), limit=200
        )
    return [run.id for run in runs]


# -- provisioning ------------------------------------------------------------------------------


def test_provision_creates_everything_and_rerun_reports_unchanged(env: Env) -> None:
    tenant = _tenant()
    names = TenantNames.for_tenant(tenant, "example.test")
    report = env.provision(tenant)
    assert set(report.actions()) == {s.value for s in ProvisionStep}
    assert set(report.actions().values()) == {"created"}

    ns = env.kube.get("Namespace", names.namespace, namespace=None)
    assert ns["metadata"]["labels"]["vibebench.io/tenant"] == tenant
    assert ns["metadata"]["labels"]["vibebench.io/tier"] == "starter"
    quota = env.kube.get("ResourceQuota", "tenant-quota", namespace=names.namespace)
    assert quota["spec"]["hard"]["pods"] == "10"
    assert env.kube.get("LimitRange", "tenant-limits", namespace=names.namespace)
    policy = env.kube.get("NetworkPolicy", "tenant-isolation", namespace=names.namespace)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert env.kube.get("Role", "vibebench-deployer", namespace=names.namespace)
    assert env.kube.get("RoleBinding", "vibebench-deployer", namespace=names.namespace)
    ingress = env.kube.get("Ingress", "vibebench", namespace=names.namespace)
    assert ingress["spec"]["rules"][0]["host"] == f"{tenant}.example.test"
    assert ingress["spec"]["tls"][0]["secretName"] == f"{tenant}-tls"

    secret = env.kube.get("Secret", "vibebench-mysql", namespace=names.namespace)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["MYSQL_DATABASE"] == names.database and data["MYSQL_USER"] == names.mysql_user
    assert data["MYSQL_PASSWORD"] == _block_password(names)
    assert len(data["MYSQL_PASSWORD"]) == 40
    with _connect_as(env.root, names.mysql_user, data["MYSQL_PASSWORD"], names.database) as c:
        c.cursor().execute("CREATE TABLE t (id INT PRIMARY KEY)")

    record = mysql_admin.read_tenant(env.root, env.ops, tenant)
    assert record is not None and record.status == "active" and record.tier == "starter"
    assert record.resources["namespace"] == names.namespace
    assert record.spec["tier_spec"]["pods"] == 10

    before = env.snapshot()
    again = env.provision(tenant)
    assert set(again.actions().values()) == {"unchanged"}, again.actions()
    assert env.snapshot() == before
    # The same password is kept: the app's Secret still works.
    assert _block_password(names) == data["MYSQL_PASSWORD"]


def test_tenants_are_isolated_in_mysql(env: Env) -> None:
    a, b = _tenant(), _tenant()
    env.provision(a)
    env.provision(b)
    na, nb = TenantNames.for_tenant(a), TenantNames.for_tenant(b)
    with _connect_as(env.root, nb.mysql_user, _block_password(nb), nb.database) as conn:
        conn.cursor().execute("CREATE TABLE private (id INT PRIMARY KEY)")
    with _connect_as(env.root, na.mysql_user, _block_password(na), na.database) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE mine (id INT PRIMARY KEY, v TEXT)")
        cur.execute("INSERT INTO mine VALUES (1, 'x')")
        cur.execute("SELECT v FROM mine")
        assert cur.fetchall() == (("x",),)
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute(f"SELECT * FROM `{nb.database}`.private")
        assert info.value.args[0] == 1142
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute(f"INSERT INTO `{nb.database}`.private VALUES (1)")
        assert info.value.args[0] == 1142


def test_tier_change_updates_quota_and_limits_in_place(env: Env) -> None:
    tenant = _tenant()
    names = TenantNames.for_tenant(tenant)
    env.provision(tenant, "starter")
    quota_uid = env.kube.get("ResourceQuota", "tenant-quota", namespace=names.namespace)[
        "metadata"
    ]["uid"]
    report = env.provision(tenant, "pro")
    actions = report.actions()
    assert actions["resource-quota"] == "updated"
    assert actions["limit-range"] == "updated"
    assert actions["namespace"] == "updated"  # the tier label
    assert actions["registry"] == "updated"
    for step in ("network-policy", "role", "role-binding", "mysql-database", "mysql-user"):
        assert actions[step] == "unchanged", step
    assert actions["credentials-secret"] == "unchanged"
    quota_result = next(r for r in report.results if r.step == "resource-quota")
    assert {str(c) for c in quota_result.changes} >= {
        "spec.hard.pods: 10 -> 40",
        "spec.hard.limits.memory: 4Gi -> 16Gi",
    }
    assert report.previous_tier == "starter"
    assert any(c.path == "pods" and c.after == "40" for c in report.tier_changes)
    quota = env.kube.get("ResourceQuota", "tenant-quota", namespace=names.namespace)
    assert quota["metadata"]["uid"] == quota_uid  # updated in place, not replaced
    assert quota["spec"]["hard"]["pods"] == "40"
    ns = env.kube.get("Namespace", names.namespace, namespace=None)
    assert ns["metadata"]["labels"]["vibebench.io/tier"] == "pro"
    assert mysql_admin.read_tenant(env.root, env.ops, tenant).tier == "pro"

    # Tiers are data: edit the pro tier in a TenantTiers block and re-run.
    tiers = TenantTiers()
    tiers.tiers["pro"] = tiers.tiers["pro"].model_copy(update={"pods": 77})
    report = env.provision(tenant, "pro", tiers_block=_save(tiers, "tn-tiers"))
    assert report.actions()["resource-quota"] == "updated"
    assert report.actions()["limit-range"] == "unchanged"
    assert report.actions()["namespace"] == "unchanged"
    assert [str(c) for c in report.tier_changes] == ["pods: 40 -> 77"]
    quota = env.kube.get("ResourceQuota", "tenant-quota", namespace=names.namespace)
    assert quota["metadata"]["uid"] == quota_uid and quota["spec"]["hard"]["pods"] == "77"


BAD_NAMES = [
    "a;drop database x",
    "a`b",
    "a' OR '1'='1",
    "$(rm -rf /)",
    "Acme",
    "ab",
    "x" * 41,
    "default",
    "kube-public",
    "vibebench",
    "admin",
    "system",
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_refused_and_nothing_is_created(env: Env, bad: str) -> None:
    before = env.snapshot()
    with pytest.raises(ValidationError) as info:
        ProvisionTenantParams(tenant=bad, contact="ops@example.test")
    assert "DNS-1123 label of 3-40 characters" in str(info.value)
    with pytest.raises(ValidationError):
        DeprovisionTenantParams(tenant=bad)
    # A forged model (model_construct skips pydantic) is refused too: the flow validates its
    # fields again (Prefect's parameter check, then the model) before touching anything.
    forged = ProvisionTenantParams.model_construct(
        tenant=bad,
        tier="starter",
        contact="ops@example.test",
        region="europe-west1",
        settings_block=env.settings_block,
        tiers_block="",
        rehearse_failure_at=None,
    )
    with pytest.raises((ParameterTypeError, ValidationError), match="tenant"):
        provision_tenant(**params_of(forged))
    assert env.kube.requests == []  # not one Kubernetes API call
    assert env.snapshot() == before


@pytest.mark.parametrize("step", list(ProvisionStep))
def test_failure_at_each_step_rolls_back_what_this_run_created(env: Env, step) -> None:
    tenant = _tenant()
    names = TenantNames.for_tenant(tenant)
    before = env.snapshot()
    with pytest.raises(TenantStepFailed, match=f"step '{step.value}' failed") as info:
        env.provision(tenant, rehearse_failure_at=step)
    assert "rolled back" in str(info.value)
    assert env.snapshot() == before
    with pytest.raises(ValueError):
        Secret.load(names.credentials_block)
    # The same spec then provisions cleanly.
    assert set(env.provision(tenant).actions().values()) == {"created"}


def test_failed_tier_change_restores_previous_state_and_keeps_what_existed(env: Env) -> None:
    tenant = _tenant()
    names = TenantNames.for_tenant(tenant)
    env.provision(tenant, "starter")
    before = env.snapshot()
    password = _block_password(names)
    # A real failure at the last step: the ops database refuses the registry write.
    conn = pymysql.connect(**env.root.pymysql_kwargs(env.ops))
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON `{mysql_admin.REGISTRY_TABLE}` "
            "FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'registry is read-only'"
        )
    with pytest.raises(TenantStepFailed, match="step 'registry' failed") as info:
        env.provision(tenant, "enterprise")
    assert "registry is read-only" in str(info.value)
    with conn.cursor() as cur:
        cur.execute("DROP TRIGGER refuse")
    conn.close()
    after = env.snapshot()
    # Quota, limits and namespace label were updated by the run, then put back; uids equal:
    # nothing that existed before was deleted or recreated.
    assert after == before
    assert _block_password(names) == password


def test_real_kubernetes_fault_fails_naming_the_step_and_rolls_back(env: Env) -> None:
    tenant = _tenant()
    before = env.snapshot()
    env.kube.fail_next(times=1, status=403, method="POST", path="/roles$")
    with pytest.raises(TenantStepFailed, match=r"step 'role' failed.*HTTP 403"):
        env.provision(tenant)
    assert env.snapshot() == before


def test_transient_kubernetes_fault_is_retried_inside_the_step(env: Env) -> None:
    tenant = _tenant()
    env.kube.fail_next(times=2, status=503, method="POST", path="/networkpolicies$")
    report = env.provision(tenant)
    assert report.actions()["network-policy"] == "created"
    assert report.actions()["namespace"] == "created"  # not rolled back by the retried blip
    assert env.kube.get("Namespace", f"{tenant}-vibebench", namespace=None) is not None


def test_foreign_namespace_is_left_alone(env: Env) -> None:
    tenant = _tenant()
    env.kube.put(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": f"{tenant}-vibebench", "labels": {"team": "other"}},
        }
    )
    before = env.snapshot()
    with pytest.raises(TenantStepFailed, match=r"step 'namespace' failed.*left alone"):
        env.provision(tenant)
    assert env.snapshot() == before


# -- deprovisioning ----------------------------------------------------------------------------


def test_deprovision_refusals_touch_nothing(env: Env) -> None:
    tenant = _tenant()
    env.provision(tenant)
    before = env.snapshot()
    with pytest.raises(DeprovisionRefused, match="confirm must equal"):
        env.deprovision(tenant, dry_run=False, confirm=tenant + "x")
    with pytest.raises(DeprovisionRefused, match="needs confirm"):
        env.deprovision(tenant, dry_run=False)
    stranger = _tenant()
    with pytest.raises(TenantUnknown, match="does not know"):
        env.deprovision(stranger, dry_run=False, confirm=stranger)
    with pytest.raises(TenantUnknown, match="does not know"):
        env.deprovision(stranger)
    plan = env.deprovision(tenant)  # dry run by default
    assert plan.dry_run and plan.results == []
    assert any("final backup" in line for line in plan.plan)
    assert any(f"drop MySQL database {tenant.replace('-', '_')}" in line for line in plan.plan)
    assert env.snapshot() == before


def test_real_deprovision_leaves_restorable_backup_and_nothing_else(env: Env) -> None:
    gone, kept = _tenant(), _tenant()
    env.provision(gone)
    env.provision(kept, "pro")
    ng, nk = TenantNames.for_tenant(gone), TenantNames.for_tenant(kept)
    password = _block_password(ng)
    with _connect_as(env.root, ng.mysql_user, password, ng.database) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE runs (id INT PRIMARY KEY, score DOUBLE, note TEXT)")
        cur.executemany(
            "INSERT INTO runs VALUES (%s, %s, %s)", [(i, i * 1.5, f"run {i}") for i in range(500)]
        )
    env.kube.put(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "vibebench-core", "namespace": ng.namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "vibebench-core"}},
                "template": {
                    "metadata": {"labels": {"app": "vibebench-core"}},
                    "spec": {"containers": [{"name": "app", "image": "vibebench/core:1.0"}]},
                },
            },
        }
    )
    kept_before = {
        key: value for key, value in env.snapshot()["kube"].items() if nk.namespace in key
    }

    report = env.deprovision(gone, dry_run=False, confirm=gone)

    assert not report.dry_run
    assert [r.step for r in report.results] == [
        "ingress",
        "workloads",
        "namespace",
        "mysql-user",
        "mysql-database",
        "credentials-block",
        "registry",
    ]
    assert all(r.action in (Action.DELETED, Action.UPDATED) for r in report.results)
    # Nothing of the tenant is left: namespace (and all in it), user, grants, database, block.
    assert env.kube.get("Namespace", ng.namespace, namespace=None) is None
    for kind in (*KUBE_KINDS[1:], "Deployment", "ReplicaSet", "Pod"):
        assert env.kube.list(kind, namespace=ng.namespace) == [], kind
    assert not mysql_admin.user_exists(env.root, ng.mysql_user, "%")
    assert mysql_admin.account_grants(env.root, ng.mysql_user, "%") == {}
    assert not mysql_admin.database_exists(env.root, ng.database)
    with pytest.raises(pymysql.err.OperationalError):
        _connect_as(env.root, ng.mysql_user, password)
    with pytest.raises(ValueError):
        Secret.load(ng.credentials_block)
    record = mysql_admin.read_tenant(env.root, env.ops, gone)
    assert record.status == "deprovisioned" and record.deprovisioned_at is not None
    assert record.spec["final_backup"]["backup_id"] == report.final_backup["backup_id"]
    # The other tenant is untouched.
    assert {
        key: value for key, value in env.snapshot()["kube"].items() if nk.namespace in key
    } == kept_before
    assert mysql_admin.database_exists(env.root, nk.database)
    with _connect_as(env.root, nk.mysql_user, _block_password(nk), nk.database):
        pass
    assert mysql_admin.read_tenant(env.root, env.ops, kept).status == "active"

    # The final backup is committed in both regions; the project's restore path loads it
    # (from the secondary region) into a scratch database with the same rows.
    backup_id = report.final_backup["backup_id"]
    regions = [open_store(d) for d in env.store.destinations]
    committed = [newest_committed_backup([region], ng.database) for region in regions]
    assert [m.backup_id if m else None for m in committed] == [backup_id, backup_id]
    scratch = f"restore_{uuid.uuid4().hex[:8]}"
    mysql_admin.create_database(env.root, scratch)
    try:
        restore_logical_dump(committed[1], regions[1], env.root, scratch)
        conn = pymysql.connect(**env.root.pymysql_kwargs(scratch))
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*), SUM(score), MAX(note) FROM runs")
            assert cur.fetchone() == (500, sum(i * 1.5 for i in range(500)), "run 99")
        conn.close()
    finally:
        mysql_admin.drop_database(env.root, scratch)

    # Deprovisioning again is refused: the registry says it is gone.
    with pytest.raises(TenantUnknown, match="already deprovisioned"):
        env.deprovision(gone, dry_run=False, confirm=gone)


def test_password_never_appears_in_logs_artifacts_or_events(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = _tenant()
    names = TenantNames.for_tenant(tenant)
    caplog.set_level("DEBUG")
    env.provision(tenant)
    password = _block_password(names)
    env.provision(tenant, "pro")
    with pytest.raises(TenantStepFailed):
        env.provision(tenant, "enterprise", rehearse_failure_at=ProvisionStep.REGISTRY)
    env.deprovision(tenant)
    env.deprovision(tenant, dry_run=False, confirm=tenant)
    runs = _flow_run_ids(
        (
            f"provision-tenant-{tenant}",
            f"deprovision-tenant-{tenant}",
            f"backup-mysql-{names.database}",
        )
    )
    assert len(runs) == 6  # 3 provisions, 2 deprovisions, the final backup subflow
    wanted = (
        "vibeops.tenant.provisioned",
        "vibeops.tenant.provision-failed",
        "vibeops.tenant.deprovision-planned",
        "vibeops.tenant.deprovisioned",
        "vibeops.backup.succeeded",
    )
    deadline = time.monotonic() + 30  # events and logs are shipped by background workers
    while True:
        texts = _run_texts(
            runs, [f"vibeops.tenant.{tenant}", f"vibeops.backup.mysql.{names.database}"]
        )
        missing = [event for event in wanted if event not in texts]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # We did read the real output: logs, artifacts and every kind of event.
    assert not missing, missing
    assert "mysql-user" in texts and "Tenant `" in texts
    for haystack in (texts, caplog.text):
        assert password not in haystack
        assert base64.b64encode(password.encode()).decode() not in haystack
