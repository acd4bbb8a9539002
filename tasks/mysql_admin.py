"""MySQL/MariaDB administration for tenants: databases, users, grants, the tenants registry.

Plain functions over pymysql, each taking the admin MySQLConnection block. Identifiers are
validated against a strict pattern and backtick-quoted; account names and passwords travel
as query parameters, never as SQL text; a driver error that could echo a password has the
password scrubbed from its message.

Example:
    ```python
    from blocks import MySQLConnection
    from tasks import mysql_admin

    admin = MySQLConnection.load("tenants-admin")
    mysql_admin.create_database(admin, "acme_corp_vibebench")
    ```
"""

from __future__ import annotations

import json
import re
import secrets
import string
from datetime import UTC, datetime
from typing import Any

import pymysql
from pydantic import SecretStr

from blocks.mysql import MySQLConnection
from tasks.errors import ConfigurationError, DatabaseUnreachable, TenantSqlError, VibeOpsError
from tasks.mysql import connect, quote_composed_name, quote_identifier, translate_error
from tasks.tenants import FieldChange, TenantRecord

# Tenant identifiers are narrower than what MySQL allows: no '$', no '-', no quoting tricks.
_SCHEMA = re.compile(r"^[a-z0-9_]{1,64}$")
_USER = re.compile(r"^[a-z0-9_]{1,32}$")
_HOST = re.compile(r"^[A-Za-z0-9_.%:-]{1,255}$")

# What a tenant's application may do in its own database (no GRANT OPTION, no FILE, nothing
# global). The tier does not change this.
TENANT_PRIVILEGES = (
    "ALTER",
    "CREATE",
    "CREATE TEMPORARY TABLES",
    "CREATE VIEW",
    "DELETE",
    "DROP",
    "EXECUTE",
    "INDEX",
    "INSERT",
    "LOCK TABLES",
    "REFERENCES",
    "SELECT",
    "SHOW VIEW",
    "TRIGGER",
    "UPDATE",
)
PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 40
REGISTRY_TABLE = "vibeops_tenants"
_ER_DB_CREATE_EXISTS = 1007
_ER_CANNOT_USER = 1396


def schema_name(name: str) -> str:
    """Validate a tenant database name and return it backtick-quoted."""
    if not _SCHEMA.match(name):
        raise ConfigurationError(
            f"database name {name!r} is not allowed: use 1-64 of a-z, 0-9 and '_'"
        )
    return quote_composed_name(name, "tenant database")


def _account(user: str, host: str) -> tuple[str, str]:
    if not _USER.match(user):
        raise ConfigurationError(f"MySQL user {user!r} is not allowed: use 1-32 of a-z, 0-9, '_'")
    if not _HOST.match(host):
        raise ConfigurationError(
            f"MySQL account host {host!r} is not allowed: use a host name, an IP or '%'"
        )
    return user, host


def generate_password(length: int = PASSWORD_LENGTH) -> SecretStr:
    """A strong random password (letters and digits, ~238 bits at 40 characters)."""
    if length < 20:
        raise ConfigurationError(f"password length {length} is too short; use at least 20")
    return SecretStr("".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length)))


def _run(
    admin: MySQLConnection,
    sql: str,
    params: tuple[Any, ...] = (),
    secret: SecretStr | None = None,
    database: str | None = None,
) -> list[tuple[Any, ...]]:
    """Run one statement as the admin; errors are typed and never carry `secret`."""
    try:
        with connect(admin, database) as connection, connection.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    except pymysql.err.MySQLError as exc:
        message = str(exc)
        if secret is not None:
            message = message.replace(secret.get_secret_value(), "***")
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if isinstance(exc, pymysql.err.OperationalError) and code in {2003, 2006, 2013}:
            raise translate_error(exc, admin, database) from None
        raise TenantSqlError(f"MySQL error {code} on {admin.host}:{admin.port}: {message}") from (
            None if secret is not None else exc
        )


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying inside a provisioning step: the server briefly out of reach."""
    return isinstance(exc, DatabaseUnreachable)


# -- databases ---------------------------------------------------------------------------------


def database_exists(admin: MySQLConnection, database: str) -> bool:
    schema_name(database)
    rows = _run(
        admin,
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s",
        (database,),
    )
    return bool(rows[0][0])


def create_database(admin: MySQLConnection, database: str) -> bool:
    """Create `database` (utf8mb4); returns False when it already existed."""
    quoted = schema_name(database)
    try:
        _run(admin, f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    except TenantSqlError as exc:
        if f"error {_ER_DB_CREATE_EXISTS} " in str(exc):
            return False
        raise
    return True


def drop_database(admin: MySQLConnection, database: str) -> bool:
    """Drop `database`; returns False when it did not exist."""
    quoted = schema_name(database)
    existed = database_exists(admin, database)
    _run(admin, f"DROP DATABASE IF EXISTS {quoted}")
    return existed


def table_count(admin: MySQLConnection, database: str) -> int:
    schema_name(database)
    rows = _run(
        admin,
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s",
        (database,),
    )
    return int(rows[0][0])


# -- users and grants --------------------------------------------------------------------------


def user_exists(admin: MySQLConnection, user: str, host: str) -> bool:
    user, host = _account(user, host)
    rows = _run(
        admin, "SELECT COUNT(*) FROM mysql.user WHERE User = %s AND Host = %s", (user, host)
    )
    return bool(rows[0][0])


def create_user(admin: MySQLConnection, user: str, host: str, password: SecretStr) -> None:
    """CREATE USER with a password (sent as a query parameter, scrubbed from errors)."""
    user, host = _account(user, host)
    _run(
        admin,
        "CREATE USER %s@%s IDENTIFIED BY %s",
        (user, host, password.get_secret_value()),
        secret=password,
    )


def set_password(admin: MySQLConnection, user: str, host: str, password: SecretStr) -> None:
    user, host = _account(user, host)
    _run(
        admin,
        "ALTER USER %s@%s IDENTIFIED BY %s",
        (user, host, password.get_secret_value()),
        secret=password,
    )


def drop_user(admin: MySQLConnection, user: str, host: str) -> bool:
    """Drop the account; returns False when it did not exist."""
    user, host = _account(user, host)
    existed = user_exists(admin, user, host)
    _run(admin, "DROP USER IF EXISTS %s@%s", (user, host))
    return existed


def account_grants(admin: MySQLConnection, user: str, host: str) -> dict[str, set[str]]:
    """Privileges of an account by scope: '*' (global), '<db>' or '<db>.<table>'.

    USAGE (no privilege) is left out, so an account with nothing but a login maps to {}.
    """
    user, host = _account(user, host)
    grantee = f"'{user}'@'{host}'"
    grants: dict[str, set[str]] = {}
    queries = (
        ("SELECT '*', privilege_type FROM information_schema.user_privileges WHERE grantee = %s"),
        (
            "SELECT table_schema, privilege_type FROM information_schema.schema_privileges"
            " WHERE grantee = %s"
        ),
        (
            "SELECT CONCAT(table_schema, '.', table_name), privilege_type"
            " FROM information_schema.table_privileges WHERE grantee = %s"
        ),
    )
    for sql in queries:
        for scope, privilege in _run(admin, sql, (grantee,)):
            if privilege != "USAGE":
                grants.setdefault(str(scope), set()).add(str(privilege))
    return grants


def ensure_grants(admin: MySQLConnection, user: str, host: str, database: str) -> list[FieldChange]:
    """Make the account's privileges exactly TENANT_PRIVILEGES on `database` and nothing else.

    Returns the changes made (revoked extras, granted missing ones); [] when already exact.
    """
    user, host = _account(user, host)
    quoted = schema_name(database)
    wanted = set(TENANT_PRIVILEGES)
    current = account_grants(admin, user, host)
    changes: list[FieldChange] = []
    for scope, privileges in sorted(current.items()):
        if scope == database:
            continue
        target = "*.*" if scope == "*" else _scope_sql(scope)
        _run(admin, f"REVOKE ALL PRIVILEGES ON {target} FROM %s@%s", (user, host))
        changes.append(FieldChange(f"grants.{scope}", ",".join(sorted(privileges)), None))
    have = current.get(database, set())
    if have != wanted:
        if have - wanted:
            _run(admin, f"REVOKE ALL PRIVILEGES ON {quoted}.* FROM %s@%s", (user, host))
        _run(admin, f"GRANT {', '.join(sorted(wanted))} ON {quoted}.* TO %s@%s", (user, host))
        changes.append(
            FieldChange(
                f"grants.{database}",
                ",".join(sorted(have)) or None,
                ",".join(sorted(wanted)),
            )
        )
    return changes


def _scope_sql(scope: str) -> str:
    if "." in scope:
        db, table = scope.split(".", 1)
        return f"{quote_identifier(db)}.{quote_identifier(table)}"
    return f"{quote_identifier(scope)}.*"


def can_login(admin: MySQLConnection, user: str, password: SecretStr) -> bool:
    """True when `user`/`password` can log in to the admin's server."""
    probe = admin.model_copy(update={"user": user, "password": password})
    try:
        with connect(probe, None) as connection, connection.cursor() as cur:
            cur.execute("SELECT 1")
            return True
    except VibeOpsError:
        return False


# -- the tenants registry (ops database) -------------------------------------------------------


def ensure_registry(admin: MySQLConnection, ops_database: str) -> None:
    """Create the ops database and the registry table when missing (idempotent)."""
    quoted = schema_name(ops_database)
    _run(admin, f"CREATE DATABASE IF NOT EXISTS {quoted} CHARACTER SET utf8mb4")
    _run(
        admin,
        f"CREATE TABLE IF NOT EXISTS {quoted}.`{REGISTRY_TABLE}` ("
        " tenant VARCHAR(40) NOT NULL PRIMARY KEY,"
        " tier VARCHAR(32) NOT NULL,"
        " contact VARCHAR(254) NOT NULL,"
        " region VARCHAR(64) NOT NULL,"
        " status VARCHAR(20) NOT NULL,"
        " spec LONGTEXT NOT NULL,"
        " resources LONGTEXT NOT NULL,"
        " created_at DATETIME(6) NOT NULL,"
        " updated_at DATETIME(6) NOT NULL,"
        " deprovisioned_at DATETIME(6) NULL"
        ") CHARACTER SET utf8mb4",
    )


_COLUMNS = (
    "tenant, tier, contact, region, status, spec, resources, created_at, updated_at, "
    "deprovisioned_at"
)


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def read_tenant(admin: MySQLConnection, ops_database: str, tenant: str) -> TenantRecord | None:
    """The registry row of `tenant`, or None."""
    quoted = schema_name(ops_database)
    rows = _run(
        admin,
        f"SELECT {_COLUMNS} FROM {quoted}.`{REGISTRY_TABLE}` WHERE tenant = %s",
        (tenant,),
    )
    if not rows:
        return None
    row = rows[0]
    return TenantRecord(
        tenant=row[0],
        tier=row[1],
        contact=row[2],
        region=row[3],
        status=row[4],
        spec=json.loads(row[5]),
        resources=json.loads(row[6]),
        created_at=_utc(row[7]),
        updated_at=_utc(row[8]),
        deprovisioned_at=_utc(row[9]),
    )


def list_tenants(admin: MySQLConnection, ops_database: str) -> list[str]:
    quoted = schema_name(ops_database)
    return [str(r[0]) for r in _run(admin, f"SELECT tenant FROM {quoted}.`{REGISTRY_TABLE}`")]


def write_tenant(admin: MySQLConnection, ops_database: str, record: TenantRecord) -> None:
    """Insert or replace the registry row of `record.tenant` (timestamps as given)."""
    quoted = schema_name(ops_database)
    now = datetime.now(UTC)
    _run(
        admin,
        f"REPLACE INTO {quoted}.`{REGISTRY_TABLE}` ({_COLUMNS})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            record.tenant,
            record.tier,
            record.contact,
            record.region,
            record.status,
            json.dumps(record.spec, sort_keys=True),
            json.dumps(record.resources, sort_keys=True),
            _naive(record.created_at or now),
            _naive(record.updated_at or now),
            _naive(record.deprovisioned_at),
        ),
    )


def delete_tenant_row(admin: MySQLConnection, ops_database: str, tenant: str) -> None:
    quoted = schema_name(ops_database)
    _run(admin, f"DELETE FROM {quoted}.`{REGISTRY_TABLE}` WHERE tenant = %s", (tenant,))


def _naive(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None
