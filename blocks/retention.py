"""The retention policy block: rules as data, editable in the Prefect UI."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from tasks.retention import PolicySpec, Rule, seed_rules


class RetentionPolicy(Block):
    """What is kept, for how long, and what happens to it afterwards (defaults: the seed).

    Each rule names a target (a MySQL table, an object prefix, the backup folders), how age
    is read and the action (delete, archive, compress, keep). Where the data lives comes from
    the run (connection and store blocks); `purge-retention` validates the whole policy and
    checks it against those servers before anything runs.

    Example:
        ```python
        from blocks import RetentionPolicy
        policy = RetentionPolicy.load("default")
        ```
    """

    _block_type_name = "VibeOps Retention Policy"
    _block_type_slug = "vibeops-retention-policy"
    _description = "Retention rules for MySQL tables, object prefixes and backups, with guards."

    rules: list[Rule] = Field(
        default_factory=seed_rules,
        description="Rules, run in order. Kinds: mysql_table, object_prefix, backups, "
        "mongodb_collection, influxdb_tiers (hot/warm/cold with downsampling).",
    )
    max_delete_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Refuse to delete more than this fraction of a table or prefix in one run "
        "unless the run is forced.",
    )
    chunk_rows: int = Field(
        default=5000, ge=100, le=100_000, description="Rows per DELETE chunk in MySQL purges."
    )
    pause_ms: int = Field(
        default=20, ge=0, le=10_000, description="Pause between DELETE chunks (writers, replicas)."
    )

    def spec(self) -> PolicySpec:
        """The rules and guards as plain data (what the pure validation and plan take)."""
        return PolicySpec(rules=self.rules, max_delete_fraction=self.max_delete_fraction)
