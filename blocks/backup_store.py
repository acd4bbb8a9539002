"""The backup store: one or more regional destinations (GCS buckets or local folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect.blocks.core import Block
from prefect_gcp.cloud_storage import GcsBucket
from pydantic import Field, field_validator, model_validator


class LocalFolderDestination(Block):
    """A local folder standing in for one region's bucket (the embedded default).

    Example:
        ```python
        from blocks import LocalFolderDestination
        LocalFolderDestination(region="local-a", path="/var/backups/a").save("local-a")
        ```
    """

    _block_type_name = "VibeOps Local Folder Destination"
    _block_type_slug = "vibeops-local-folder-destination"
    _description = "A folder on this machine used as one backup region."

    kind: Literal["local"] = Field(default="local", description="Destination kind.")
    region: str = Field(description="Region label, e.g. 'local-a'.")
    path: str = Field(description="Absolute folder path; created on first use.")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not Path(value).is_absolute():
            raise ValueError(f"path must be absolute, got {value!r}; e.g. /var/backups/region-a")
        return value


class GcsDestination(Block):
    """A Google Cloud Storage bucket in one region (production).

    Example:
        ```python
        from blocks import GcsDestination
        dest = GcsDestination.load("backups-us")
        ```
    """

    _block_type_name = "VibeOps GCS Destination"
    _block_type_slug = "vibeops-gcs-destination"
    _description = "A GCS bucket used as one backup region."

    kind: Literal["gcs"] = Field(default="gcs", description="Destination kind.")
    region: str = Field(description="Region label, e.g. 'us-central1'.")
    gcs_bucket: GcsBucket = Field(description="The prefect-gcp bucket block (credentials inside).")
    chunk_size_mib: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Resumable-upload chunk size in MiB (32-100 is fast).",
    )
    retry_deadline_seconds: int = Field(
        default=120,
        ge=1,
        le=3600,
        description="How long one upload keeps retrying transient GCS errors before failing.",
    )
    archive_storage_class: str = Field(
        default="ARCHIVE", description="Storage class that retention moves old backups to."
    )


class BackupStore(Block):
    """Where backups go: every destination receives every backup in the same pass.

    Example:
        ```python
        from blocks import BackupStore
        store = BackupStore.load("default")
        ```
    """

    _block_type_name = "VibeOps Backup Store"
    _block_type_slug = "vibeops-backup-store"
    _description = "The regional destinations every backup is written to, primary first."

    destinations: list[LocalFolderDestination | GcsDestination] = Field(
        description="Regional destinations, primary first. Two regions are recommended."
    )

    @model_validator(mode="after")
    def _unique_regions(self) -> BackupStore:
        if not self.destinations:
            raise ValueError("destinations must list at least one region")
        regions = [d.region for d in self.destinations]
        if len(set(regions)) != len(regions):
            raise ValueError(f"destinations must have distinct regions, got {regions}")
        return self
