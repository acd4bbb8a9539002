"""Large rows on restore: make the server's `max_allowed_packet` fit the backup's longest row.

A logical dump writes each row inside an INSERT; mysqldump's `--hex-blob` doubles a BLOB's
bytes, and mydumper's escaping can double them too. A row whose INSERT exceeds the restore
server's `max_allowed_packet` makes the server drop the connection mid-load (error 2006).
Before loading, `fit_packet_limit` compares the manifest's longest row (TableFacts.
longest_row_bytes) with the server's limit. It raises the global limit where the user
may (and puts it back afterwards), or fails before anything is loaded, naming the table,
the size and the setting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pymysql

from blocks.mysql import MySQLConnection
from tasks.errors import RestoreLoadError
from tasks.manifest import BackupManifest
from tasks.mysql import connect, one_row

MAX_PACKET = 1 << 30  # the server's ceiling for max_allowed_packet
MARGIN = 1 << 20  # statement text around the row, other columns


@dataclass(frozen=True)
class PacketNeed:
    """The largest INSERT a backup's restore will send, and the table it comes from."""

    table: str
    row_bytes: int

    @property
    def packet_bytes(self) -> int:
        """max_allowed_packet that row needs: hex or escaped (x2) plus a margin, KiB-rounded."""
        needed = 2 * self.row_bytes + MARGIN
        return min(MAX_PACKET, -(-needed // 1024) * 1024)


def packet_need(manifest: BackupManifest) -> PacketNeed | None:
    """The backup's longest row (None when the manifest does not record one)."""
    sizes = {t: f.longest_row_bytes for t, f in manifest.tables.items() if f.longest_row_bytes}
    if not sizes:
        return None
    table = max(sizes, key=lambda t: sizes[t] or 0)
    return PacketNeed(table, int(sizes[table] or 0))


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


@contextlib.contextmanager
def fit_packet_limit(
    server: MySQLConnection, manifest: BackupManifest, log: list[str] | None = None
) -> Iterator[None]:
    """Within the block, the server accepts the backup's longest row (see module docstring).

    Raises:
        RestoreLoadError: the row cannot fit (too big for any server, or the limit is too low
            and this user may not raise it), raised before anything is loaded.
    """
    need = packet_need(manifest)
    if need is None:
        yield
        return
    where = f"{server.host}:{server.port}"
    what = (
        f"table {need.table!r} has a row of {_mb(need.row_bytes)}, whose INSERT needs "
        f"max_allowed_packet >= {_mb(need.packet_bytes)}"
    )
    if 2 * need.row_bytes + MARGIN > MAX_PACKET:
        raise RestoreLoadError(
            f"{what}, more than any server accepts (1 GiB): restore this backup's engine "
            "'physical' copy instead, or store such values outside the database; nothing was loaded"
        )
    with connect(server) as connection, connection.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_allowed_packet")
        before = int(one_row(cur)[0])
        if before >= need.packet_bytes:
            yield
            return
        try:
            cur.execute(f"SET GLOBAL max_allowed_packet = {need.packet_bytes}")
        except pymysql.err.MySQLError as exc:
            raise RestoreLoadError(
                f"{what}, but the restore server {where} has max_allowed_packet = "
                f"{_mb(before)} and user {server.user!r} may not raise it ({exc.args[-1]}): "
                f"run SET GLOBAL max_allowed_packet = {need.packet_bytes} there (or set it in "
                "its configuration), or restore as a user with SUPER; nothing was loaded"
            ) from None
        if log is not None:
            log.append(
                f"raised max_allowed_packet on {where} from {_mb(before)} to "
                f"{_mb(need.packet_bytes)} for {need.table!r} (restored afterwards)"
            )
        try:
            yield
        finally:
            with contextlib.suppress(pymysql.err.MySQLError):
                cur.execute(f"SET GLOBAL max_allowed_packet = {before}")
