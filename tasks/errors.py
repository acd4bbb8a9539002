"""The project's exception tree: one root, one leaf per failure an operator must tell apart."""


class VibeOpsError(Exception):
    """Root of every error raised by VibeBench Ops."""


class ConfigurationError(VibeOpsError):
    """A block, parameter or policy is invalid; the message names the field and the fix."""


class MissingConfiguration(ConfigurationError):
    """Something a run needs is not configured; the message names the block to create and where."""


class ClusterNotConfigured(MissingConfiguration):
    """No Kubernetes cluster: no KubeCluster block named, no in-cluster account, no kubeconfig."""


class StoreNotConfigured(MissingConfiguration):
    """The named backup store block does not exist."""


class ConnectionNotConfigured(MissingConfiguration):
    """The named database connection block (MySQL, MongoDB, InfluxDB) does not exist."""


# Where blocks are created: the UI page and the command line.
BLOCKS_HELP = (
    "create it in the Prefect UI (Blocks > Add block > {block_type}) or with "
    "`vibeops setup-blocks` (registers the block types) and `{block_class}(...).save(NAME)`"
)


def missing_block(
    field: str, block_type: str, block_class: str, name: str, default: str
) -> MissingConfiguration:
    """The typed error for a block name that does not resolve, naming the fix."""
    error = {
        "VibeOps Backup Store": StoreNotConfigured,
        "VibeOps Kube Cluster": ClusterNotConfigured,
    }.get(block_type, ConnectionNotConfigured)
    return error(
        f"{field}: there is no '{block_type}' block named {name!r}; "
        + BLOCKS_HELP.format(block_type=block_type, block_class=block_class)
        + f", or leave {field} empty for {default}"
    )


class ExternalCommandError(VibeOpsError):
    """An external tool (mysqldump, mariadb, ...) exited non-zero."""


class DatabaseUnreachable(VibeOpsError):
    """The database server could not be reached (transient: retried)."""


class DatabaseAuthError(VibeOpsError):
    """The database refused the credentials (permanent: not retried)."""


class DatabaseNotFound(VibeOpsError):
    """The named database does not exist on the server."""


class StorageError(VibeOpsError):
    """A backup destination failed."""


class DestinationMissing(StorageError):
    """A bucket or folder that should exist does not."""


class BackupVerificationError(VibeOpsError):
    """A stored backup object does not match what was written."""


class RestoreTargetRefused(VibeOpsError):
    """A restore was asked to write into a database it must never touch."""


class DrillFailed(VibeOpsError):
    """A restore drill failed validation or missed an RTO/RPO target."""


class RetentionPolicyInvalid(ConfigurationError):
    """A retention rule would break a guard (audit logs, minimum copies, ...)."""


class SmokeTestFailed(VibeOpsError):
    """A smoke check against a deployed version failed."""


class RolloutTimeoutError(VibeOpsError):
    """A Kubernetes rollout did not become ready within its timeout."""


class TenantNameInvalid(ConfigurationError):
    """A tenant name is not an allowed DNS-1123 label."""


class AlertPayloadInvalid(VibeOpsError):
    """An Alertmanager webhook body is malformed; the message names the field (relay answers 400)."""


class EventDeliveryError(VibeOpsError):
    """The relay could not post events to the Prefect API (transient: Alertmanager retries)."""


class IncidentRunbookFailed(VibeOpsError):
    """An alert-started runbook could not repair what the alert reported."""


class TenantStepFailed(VibeOpsError):
    """A provisioning step failed; this run's changes were rolled back (the message names the step)."""


class TenantSqlError(VibeOpsError):
    """A tenant database/user statement failed (the message never carries a password)."""


class TenantUnknown(ConfigurationError):
    """The tenants registry does not know this tenant (or it is already deprovisioned)."""


class TenantResourceConflict(VibeOpsError):
    """A resource with a tenant's name exists but belongs to someone else; it is left alone."""


class DeprovisionRefused(ConfigurationError):
    """A deprovision was refused before touching anything (confirm mismatch, no final backup)."""


class RetentionRefused(VibeOpsError):
    """A retention step refused to act: the backup catalog is partly unreadable, or a guard tripped."""


class RetentionIncomplete(VibeOpsError):
    """One or more retention rules failed; the other rules were carried out."""


class RestoreLoadError(VibeOpsError):
    """Loading a verified backup into the scratch target failed (the SQL itself is bad)."""


class ImageReferenceInvalid(ConfigurationError):
    """An image reference is not `registry/repo/name:tag` or `...@sha256:<64 hex>`."""


class KubernetesApiError(VibeOpsError):
    """The Kubernetes API answered an error (status inside; 429/5xx are retried as transient)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DeployRefused(ConfigurationError):
    """A deploy was refused before changing anything (backup gate, cluster layout, bad state)."""


class DeployLockTimeout(VibeOpsError):
    """Another deploy of the same app held the deploy lock for longer than the wait allowed."""


class DeployRolledBack(VibeOpsError):
    """A deploy failed (rollout, smoke checks) and the previous version was restored."""


class RollbackFailed(VibeOpsError):
    """Restoring the previous version failed too: staging needs a human now."""


class RehearsedFailure(VibeOpsError):
    """A deliberate failure asked for by a rehearsal parameter (game-day drill of a rollback)."""


class BinlogGapDetected(VibeOpsError):
    """Binary logs are missing from the archive (purged first, server reset, base not covered);
    the message says what to do (usually: take a new base backup now)."""


class RecoveryChainBroken(VibeOpsError):
    """Archived binary logs do not join up (a missing segment, a filtered statement): no replay."""


class RestoreRefused(ConfigurationError):
    """restore-mysql refused before changing anything (non-empty target, confirm mismatch)."""
