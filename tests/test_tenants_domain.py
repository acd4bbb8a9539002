"""Pure tenant logic: name rules, derived names, manifests (kubernetes-validate), diffs."""

from __future__ import annotations

import base64
import copy

import kubernetes_validate
import pytest

from blocks import TenantTiers
from tasks.errors import TenantNameInvalid
from tasks.tenants import (
    DEFAULT_TIERS,
    Action,
    FieldChange,
    NetworkSettings,
    StepResult,
    TenantNames,
    TierSpec,
    call_with_retries,
    credentials_secret_manifest,
    diff_manifest,
    ingress_manifest,
    limit_range_manifest,
    namespace_manifest,
    network_policy_manifest,
    resource_quota_manifest,
    results_table,
    role_binding_manifest,
    role_manifest,
    tier_diff,
    validate_tenant_name,
)

K8S_VERSION = kubernetes_validate.latest_version()


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a;drop database x", "metacharacters"),
        ("a`b", "metacharacters"),
        ("a' OR '1'='1", "metacharacters"),
        ("a$(reboot)", "metacharacters"),
        ("a b", "metacharacters"),
        ("Acme", "uppercase"),
        ("ab", "2 characters"),
        ("a" * 41, "41 characters"),
        ("-acme", "not a DNS-1123 label"),
        ("acme-", "not a DNS-1123 label"),
        ("acme_corp", "not a DNS-1123 label"),
        ("acme.corp", "not a DNS-1123 label"),
        ("café", "not a DNS-1123 label"),
        ("default", "reserved"),
        ("kube-system", "reserved"),
        ("kube-tenant", "reserved"),
        ("vibebench", "reserved"),
        ("admin", "reserved"),
        ("system", "reserved"),
        ("", "empty"),
    ],
)
def test_bad_names_are_refused_with_what_is_allowed(name: str, fragment: str) -> None:
    with pytest.raises(TenantNameInvalid) as info:
        validate_tenant_name(name)
    message = str(info.value)
    assert fragment in message
    assert "DNS-1123 label of 3-40 characters" in message
    assert "lowercase letters a-z, digits 0-9 and '-'" in message


def test_non_string_name_is_refused() -> None:
    with pytest.raises(TenantNameInvalid, match="empty"):
        validate_tenant_name(None)


@pytest.mark.parametrize("name", ["acme", "acme-corp", "a1b", "x" * 40, "0rg-42"])
def test_good_names_pass(name: str) -> None:
    assert validate_tenant_name(name) == name


def test_derived_names() -> None:
    names = TenantNames.for_tenant("acme-corp", domain="example.org")
    assert names.namespace == "acme-corp-vibebench"
    assert names.database == "acme_corp_vibebench"
    assert names.mysql_user == "vb_acme_corp"
    assert names.host == "acme-corp.example.org"
    assert names.tls_secret == "acme-corp-tls"
    assert names.credentials_block == "tenant-acme-corp-mysql"


def test_long_names_keep_mysql_user_portable_and_distinct() -> None:
    one = TenantNames.for_tenant("a" * 39 + "b")
    two = TenantNames.for_tenant("a" * 39 + "c")
    assert len(one.mysql_user) <= 32 and len(two.mysql_user) <= 32
    assert one.mysql_user != two.mysql_user
    assert len(one.namespace) <= 63 and len(one.database) <= 64


def test_for_tenant_validates_again() -> None:
    with pytest.raises(TenantNameInvalid):
        TenantNames.for_tenant("x;y")


def _all_manifests(tier: str = "pro") -> list[dict]:
    names = TenantNames.for_tenant("acme-corp")
    spec = DEFAULT_TIERS[tier]
    net = NetworkSettings(database_cidrs=["10.20.0.0/16"], cluster_issuer="letsencrypt")
    return [
        namespace_manifest(names, tier),
        resource_quota_manifest(names, spec),
        limit_range_manifest(names, spec),
        network_policy_manifest(names, net),
        role_manifest(names),
        role_binding_manifest(names, net),
        credentials_secret_manifest(names, {"MYSQL_USER": "u", "MYSQL_PASSWORD": "p"}),
        ingress_manifest(names, net),
    ]


@pytest.mark.parametrize("tier", ["starter", "pro", "enterprise"])
def test_every_manifest_passes_kubernetes_validate_strict(tier: str) -> None:
    for manifest in _all_manifests(tier):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_namespace_is_labelled_with_tenant_and_tier() -> None:
    labels = _all_manifests("starter")[0]["metadata"]["labels"]
    assert labels["vibebench.io/tenant"] == "acme-corp"
    assert labels["vibebench.io/tier"] == "starter"


def test_network_policy_shape() -> None:
    policy = _all_manifests()[3]["spec"]
    assert policy["podSelector"] == {}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 5000}]
    ports = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert ports == {("TCP", 3306), ("TCP", 27017), ("TCP", 443), ("UDP", 53), ("TCP", 53)}
    db_rule, https_rule, _dns_rule = policy["egress"]
    # No "any namespace" peer: tenants can't reach each other's pods on database ports.
    assert {"namespaceSelector": {}} not in db_rule["to"]
    assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in db_rule["to"]
    assert https_rule["to"][0]["ipBlock"]["except"] == [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ]


def test_role_is_the_seed_deployer_and_binding_is_namespaced() -> None:
    role, binding = _all_manifests()[4:6]
    assert role["metadata"]["name"] == "vibebench-deployer"
    assert role["metadata"]["namespace"] == "acme-corp-vibebench"
    assert role["rules"][0]["verbs"] == ["get", "list", "watch", "update"]
    assert binding["roleRef"]["name"] == "vibebench-deployer"
    assert binding["metadata"]["namespace"] == "acme-corp-vibebench"


def test_ingress_host_and_tls() -> None:
    ingress = _all_manifests()[7]
    assert ingress["spec"]["rules"][0]["host"] == "acme-corp.vibebench.io"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["acme-corp.vibebench.io"], "secretName": "acme-corp-tls"}
    ]
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}


def test_secret_is_base64_data() -> None:
    secret = _all_manifests()[6]
    assert base64.b64decode(secret["data"]["MYSQL_PASSWORD"]) == b"p"


def test_diff_is_empty_against_itself_and_ignores_server_fields() -> None:
    for manifest in _all_manifests():
        live = copy.deepcopy(manifest)
        live["metadata"]["uid"] = "123"
        live["metadata"]["labels"]["added-by-someone"] = "x"
        live["status"] = {"phase": "Active"}
        assert diff_manifest(manifest, live) == []
        assert diff_manifest(manifest, None) == []


def test_diff_compares_quantities_by_value() -> None:
    desired = _all_manifests()[1]
    live = copy.deepcopy(desired)
    live["spec"]["hard"]["requests.cpu"] = "4000m"
    live["spec"]["hard"]["requests.memory"] = str(8 * 1024**3)
    assert diff_manifest(desired, live) == []


def test_diff_reports_tier_change_fields() -> None:
    names = TenantNames.for_tenant("acme-corp")
    live = resource_quota_manifest(names, DEFAULT_TIERS["starter"])
    desired = resource_quota_manifest(names, DEFAULT_TIERS["pro"])
    changes = {c.path: (c.before, c.after) for c in diff_manifest(desired, live)}
    assert changes["spec.hard.limits.memory"] == ("4Gi", "16Gi")
    assert changes["spec.hard.pods"] == ("10", "40")
    assert "spec.hard.services.nodeports" not in changes


def test_diff_masks_secret_values() -> None:
    names = TenantNames.for_tenant("acme-corp")
    live = credentials_secret_manifest(names, {"MYSQL_PASSWORD": "old-secret-value"})
    desired = credentials_secret_manifest(names, {"MYSQL_PASSWORD": "new-secret-value"})
    (change,) = diff_manifest(desired, live)
    assert change == FieldChange("data.MYSQL_PASSWORD", "***", "***")
    assert "secret-value" not in str(change)


def test_label_diff_and_list_diff() -> None:
    names = TenantNames.for_tenant("acme-corp")
    live = namespace_manifest(names, "starter")
    desired = namespace_manifest(names, "enterprise")
    assert [str(c) for c in diff_manifest(desired, live)] == [
        "metadata.labels.vibebench.io/tier: starter -> enterprise"
    ]
    role = role_manifest(names)
    live_role = copy.deepcopy(role)
    live_role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    paths = [c.path for c in diff_manifest(role, live_role)]
    assert paths and all(p.startswith("rules[2]") for p in paths)


def test_tier_diff_and_results_table() -> None:
    changes = tier_diff(DEFAULT_TIERS["starter"], DEFAULT_TIERS["pro"])
    assert FieldChange("pods", "10", "40") in changes
    assert tier_diff(None, DEFAULT_TIERS["pro"]) == []
    assert tier_diff(DEFAULT_TIERS["pro"], DEFAULT_TIERS["pro"]) == []
    table = results_table(
        [StepResult("resource-quota", "ns/q", Action.UPDATED, changes[:1], note="a|b")]
    )
    assert "| resource-quota | `ns/q` | updated (" in table
    assert "a\\|b" in table


def test_tier_spec_rejects_bad_quantities() -> None:
    data = DEFAULT_TIERS["pro"].model_dump()
    data["limits_memory"] = "16 GB"
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        TierSpec(**data)


def test_tiers_block_requires_all_tiers() -> None:
    assert TenantTiers().tier("enterprise").pods == 200
    with pytest.raises(ValueError, match="missing"):
        TenantTiers(tiers={"pro": DEFAULT_TIERS["pro"]})
    with pytest.raises(KeyError, match="unknown tier"):
        TenantTiers().tier("gold")


def test_call_with_retries_retries_transient_only() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("blip")
        return "ok"

    assert (
        call_with_retries(flaky, lambda e: isinstance(e, ConnectionError), sleep=sleeps.append)
        == "ok"
    )
    assert len(calls) == 3 and len(sleeps) == 2

    def broken() -> None:
        raise ValueError("permanent")

    with pytest.raises(ValueError):
        call_with_retries(broken, lambda e: isinstance(e, ConnectionError), sleep=sleeps.append)
    assert len(sleeps) == 2


def test_kubernetes_validate_has_teeth() -> None:
    broken = _all_manifests()[3]
    broken["spec"]["egress"][0]["ports"][0]["prot"] = "TCP"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
