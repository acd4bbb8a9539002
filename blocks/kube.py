"""The Kubernetes cluster block: prefect-kubernetes credentials plus how smoke checks reach apps."""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect_kubernetes.credentials import KubernetesCredentials
from pydantic import Field, SecretStr, field_validator

from tasks.deploy_rules import check_url_template


class KubeCluster(Block):
    """A Kubernetes cluster (staging) that deploys and runbooks act on.

    The kubeconfig lives in the embedded prefect-kubernetes `KubernetesCredentials` block,
    which stores it unencrypted: keep the bearer token out of it and in `bearer_token`
    here (a secret field), which is added to the client configuration at connect time.
    Leave `credentials` empty to use the in-cluster service account (a Kubernetes work
    pool) or, outside a cluster, `~/.kube/config`.

    Example:
        ```python
        from blocks import KubeCluster
        cluster = KubeCluster.load("staging")
        ```
    """

    _block_type_name = "VibeOps Kube Cluster"
    _block_type_slug = "vibeops-kube-cluster"
    _description = "A Kubernetes cluster: credentials, bearer token (secret), smoke-check URLs."

    credentials: KubernetesCredentials | None = Field(
        default=None,
        description="prefect-kubernetes credentials (a kubeconfig without secrets); empty = "
        "in-cluster service account, else ~/.kube/config.",
    )
    bearer_token: SecretStr | None = Field(
        default=None,
        description="API bearer token (stored encrypted); overrides any token in the kubeconfig.",
    )
    service_url_template: str = Field(
        default="http://{service}.{namespace}.svc.cluster.local:{port}",
        description="How the worker reaches a Service for smoke checks; fields {service}, "
        "{namespace}, {port}. In-cluster DNS by default; an ingress URL or the API-server "
        "proxy work too.",
    )
    request_timeout_seconds: float = Field(
        default=30.0, ge=1, le=300, description="Timeout of each Kubernetes API request."
    )

    @field_validator("service_url_template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_url_template(value)


def load_cluster(name: str | None) -> KubeCluster:
    """The named KubeCluster block, or the default (in-cluster account / ~/.kube/config)."""
    from tasks.errors import missing_block

    if not name:
        return KubeCluster()
    try:
        return KubeCluster.load(name)  # type: ignore[return-value]
    except ValueError as exc:
        raise missing_block(
            "cluster_block (or the alert's `cluster` label)",
            KubeCluster.get_block_type_name(),
            "KubeCluster",
            name,
            "the in-cluster account / ~/.kube/config",
        ) from exc
