"""Tenant blocks: the tiers (quota and limits as data) and the provisioning settings."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, field_validator, model_validator

from blocks.kube import KubeCluster
from tasks.errors import missing_block
from tasks.tenants import DEFAULT_TIERS, NetworkSettings, TierSpec

TIER_NAMES = ("starter", "pro", "enterprise")


class TenantTiers(Block):
    """What each tier gets: ResourceQuota and LimitRange values, edited as data.

    Changing a tier here and re-running provision-tenant updates every tenant of that tier
    in place (the run reports the diff).

    Example:
        ```python
        from blocks import TenantTiers
        tiers = TenantTiers.load("default")
        tiers.tier("pro").limits_memory  # '16Gi'
        ```
    """

    _block_type_name = "VibeOps Tenant Tiers"
    _block_type_slug = "vibeops-tenant-tiers"
    _description = "Quota and container limits per tenant tier (starter, pro, enterprise)."

    tiers: dict[str, TierSpec] = Field(
        default_factory=lambda: {name: spec.model_copy() for name, spec in DEFAULT_TIERS.items()},
        description="Tier name -> quota and limits; must define starter, pro and enterprise.",
    )

    @field_validator("tiers")
    @classmethod
    def _all_tiers(cls, value: dict[str, TierSpec]) -> dict[str, TierSpec]:
        missing = [name for name in TIER_NAMES if name not in value]
        if missing:
            raise ValueError(f"tiers must define {', '.join(TIER_NAMES)}; missing {missing}")
        return value

    def tier(self, name: str) -> TierSpec:
        """The spec of tier `name` (KeyError names the known tiers)."""
        try:
            return self.tiers[name]
        except KeyError:
            raise KeyError(f"unknown tier {name!r}; known: {sorted(self.tiers)}") from None


class TenantSettings(Block):
    """Where tenants live: the tenant MySQL server, the ops database, DNS and network rules.

    Every field has a default, so an unsaved `TenantSettings()` is the embedded local setup.

    Example:
        ```python
        from blocks import TenantSettings
        settings = TenantSettings.load("default")
        settings.domain  # 'vibebench.io'
        ```
    """

    _block_type_name = "VibeOps Tenant Settings"
    _block_type_slug = "vibeops-tenant-settings"
    _description = "Tenant MySQL server, ops registry database, domain and network policy inputs."

    mysql_block: str = Field(
        default="",
        description="Name of a 'VibeOps MySQL Connection' block with admin rights on the server "
        "that holds tenant databases; empty = the embedded local default.",
    )
    store_block: str = Field(
        default="",
        description="Name of a 'VibeOps Backup Store' block for final backups at deprovision; "
        "empty = the embedded local folders.",
    )
    ops_database: str = Field(
        default="vibeops",
        pattern=r"^[a-z0-9_]{1,64}$",
        description="Database on that server holding the tenants registry table.",
    )
    mysql_user_host: str = Field(
        default="%",
        pattern=r"^[A-Za-z0-9_.%:-]{1,255}$",
        description="Host part of tenant MySQL accounts ('%' = any; narrow it to the pod range).",
    )
    app_mysql_host: str | None = Field(
        default=None,
        description="MySQL host as the tenant's pods see it; default: the admin block's host.",
    )
    app_mysql_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="MySQL port for pods; default: the admin block's port.",
    )
    domain: str = Field(
        default="vibebench.io",
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,}$",
        description="Tenants get <tenant>.<domain>.",
    )
    network: NetworkSettings = Field(
        default_factory=NetworkSettings,
        description="App port, ingress controller, data-plane selectors, private ranges.",
    )
    kube_cluster_block: str = Field(
        default="",
        description="Name of a 'VibeOps Kube Cluster' block for the tenant cluster; empty = "
        "in-cluster service account, else ~/.kube/config.",
    )

    @model_validator(mode="after")
    def _ops_database_not_tenant(self) -> TenantSettings:
        if self.ops_database.endswith("_vibebench"):
            raise ValueError(
                "ops_database must not end in '_vibebench' (that suffix is for tenant databases)"
            )
        return self


def _load_named(block_type: type[Block], name: str, field: str) -> Block:
    try:
        return block_type.load(name, _sync=True)  # type: ignore[call-arg,return-value]
    except ValueError as exc:
        raise missing_block(
            field, block_type.get_block_type_name(), block_type.__name__, name, "the defaults"
        ) from exc


def resolve_tenant_settings(name: str | None) -> TenantSettings:
    """The named TenantSettings block, or the defaults when the name is empty."""
    if not name:
        return TenantSettings()
    return _load_named(TenantSettings, name, "settings_block")  # type: ignore[return-value]


def resolve_tiers(name: str | None) -> TenantTiers:
    """The named TenantTiers block, or the built-in tiers when the name is empty."""
    if not name:
        return TenantTiers()
    return _load_named(TenantTiers, name, "tiers_block")  # type: ignore[return-value]


def resolve_kube_cluster(name: str | None) -> KubeCluster:
    """The named KubeCluster block, or one using in-cluster config / ~/.kube/config."""
    if not name:
        return KubeCluster()
    return _load_named(KubeCluster, name, "kube_cluster_block")  # type: ignore[return-value]
