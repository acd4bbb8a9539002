"""tasks.mysql_admin against the private MariaDB: databases, users, grants, registry."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pymysql
import pytest
from pydantic import SecretStr

from blocks import MySQLConnection
from tasks import mysql_admin
from tasks.errors import ConfigurationError, TenantSqlError
from tasks.tenants import TenantNames, TenantRecord

pytestmark = pytest.mark.mysql


def _tenant() -> TenantNames:
    return TenantNames.for_tenant(f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def two_tenants(mysql_root: MySQLConnection) -> Iterator[list[tuple[TenantNames, SecretStr]]]:
    made = []
    for _ in range(2):
        names = _tenant()
        password = mysql_admin.generate_password()
        assert mysql_admin.create_database(mysql_root, names.database)
        mysql_admin.create_user(mysql_root, names.mysql_user, "%", password)
        mysql_admin.ensure_grants(mysql_root, names.mysql_user, "%", names.database)
        made.append((names, password))
    yield made
    for names, _ in made:
        mysql_admin.drop_user(mysql_root, names.mysql_user, "%")
        mysql_admin.drop_database(mysql_root, names.database)


def _as_tenant(root: MySQLConnection, names: TenantNames, password: SecretStr):
    return pymysql.connect(
        host=root.host,
        port=root.port,
        user=names.mysql_user,
        password=password.get_secret_value(),
        database=names.database,
        autocommit=True,
    )


def test_tenant_reads_and_writes_own_db_and_gets_1142_on_another(
    mysql_root: MySQLConnection, two_tenants
) -> None:
    (a, a_pw), (b, b_pw) = two_tenants
    with _as_tenant(mysql_root, b, b_pw) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE secrets (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.execute("INSERT INTO secrets VALUES (1, 'b-only')")
    with _as_tenant(mysql_root, a, a_pw) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)")
        cur.execute("INSERT INTO notes VALUES (1, 'hello'), (2, 'world')")
        cur.execute("UPDATE notes SET body = 'hi' WHERE id = 1")
        cur.execute("SELECT body FROM notes ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == ["hi", "world"]
        for sql in (
            f"SELECT * FROM `{b.database}`.secrets",
            f"INSERT INTO `{b.database}`.secrets VALUES (2, 'x')",
            f"DELETE FROM `{b.database}`.secrets",
        ):
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute(sql)
            assert info.value.args[0] == 1142, info.value
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute(f"DROP TABLE `{b.database}`.secrets")
        assert info.value.args[0] == 1142
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("SELECT * FROM mysql.user")
        assert info.value.args[0] == 1142


def test_grants_are_exact_and_idempotent(mysql_root: MySQLConnection, two_tenants) -> None:
    (a, _), (b, _) = two_tenants
    grants = mysql_admin.account_grants(mysql_root, a.mysql_user, "%")
    assert grants == {a.database: set(mysql_admin.TENANT_PRIVILEGES)}
    assert mysql_admin.ensure_grants(mysql_root, a.mysql_user, "%", a.database) == []
    # Drift: someone grants extra rights; ensure_grants takes them away again and says so.
    root = pymysql.connect(**mysql_root.pymysql_kwargs())
    with root.cursor() as cur:
        cur.execute(f"GRANT SELECT ON `{b.database}`.* TO %s@'%%'", (a.mysql_user,))
        cur.execute("GRANT PROCESS ON *.* TO %s@'%%'", (a.mysql_user,))
        cur.execute(f"REVOKE UPDATE ON `{a.database}`.* FROM %s@'%%'", (a.mysql_user,))
    root.close()
    changes = {c.path for c in mysql_admin.ensure_grants(mysql_root, a.mysql_user, "%", a.database)}
    assert changes == {f"grants.{b.database}", "grants.*", f"grants.{a.database}"}
    assert mysql_admin.account_grants(mysql_root, a.mysql_user, "%") == {
        a.database: set(mysql_admin.TENANT_PRIVILEGES)
    }


def test_create_and_drop_report_what_existed(mysql_root: MySQLConnection) -> None:
    names = _tenant()
    assert not mysql_admin.database_exists(mysql_root, names.database)
    assert mysql_admin.create_database(mysql_root, names.database) is True
    assert mysql_admin.create_database(mysql_root, names.database) is False
    password = mysql_admin.generate_password()
    mysql_admin.create_user(mysql_root, names.mysql_user, "%", password)
    assert mysql_admin.user_exists(mysql_root, names.mysql_user, "%")
    assert mysql_admin.can_login(mysql_root, names.mysql_user, password)
    assert not mysql_admin.can_login(mysql_root, names.mysql_user, SecretStr("wrong-password"))
    new_password = mysql_admin.generate_password()
    mysql_admin.set_password(mysql_root, names.mysql_user, "%", new_password)
    assert mysql_admin.can_login(mysql_root, names.mysql_user, new_password)
    assert mysql_admin.drop_user(mysql_root, names.mysql_user, "%") is True
    assert mysql_admin.drop_user(mysql_root, names.mysql_user, "%") is False
    assert mysql_admin.drop_database(mysql_root, names.database) is True
    assert mysql_admin.drop_database(mysql_root, names.database) is False


@pytest.mark.parametrize(
    "bad", ["a`b", "a;drop database x", "a' OR '1'='1", "A", "x" * 65, "a-b", "a$b", ""]
)
def test_identifiers_are_validated_before_sql(mysql_root: MySQLConnection, bad: str) -> None:
    with pytest.raises(ConfigurationError):
        mysql_admin.create_database(mysql_root, bad)
    with pytest.raises(ConfigurationError):
        mysql_admin.create_user(mysql_root, bad, "%", SecretStr("x" * 30))
    with pytest.raises(ConfigurationError):
        mysql_admin.user_exists(mysql_root, "ok_user", f"{bad}'")


def test_passwords_are_strong_and_distinct() -> None:
    passwords = {mysql_admin.generate_password().get_secret_value() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) == 40 and p.isalnum() for p in passwords)
    with pytest.raises(ConfigurationError):
        mysql_admin.generate_password(8)


def test_errors_never_carry_the_password(mysql_root: MySQLConnection) -> None:
    password = SecretStr("Sup3rSecretValue0123456789")
    with pytest.raises(TenantSqlError) as info:
        # A syntax error: the server echoes the statement text, password included.
        mysql_admin._run(mysql_root, "SELEC %s", (password.get_secret_value(),), secret=password)
    assert "Sup3rSecretValue" not in str(info.value)
    assert "***" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_registry_round_trip(mysql_root: MySQLConnection) -> None:
    ops = f"ops_{uuid.uuid4().hex[:8]}"
    mysql_admin.ensure_registry(mysql_root, ops)
    mysql_admin.ensure_registry(mysql_root, ops)  # idempotent
    names = _tenant()
    assert mysql_admin.read_tenant(mysql_root, ops, names.tenant) is None
    now = datetime.now(UTC).replace(microsecond=123456)
    record = TenantRecord(
        tenant=names.tenant,
        tier="pro",
        contact="ops@example.com",
        region="europe-west1",
        spec={"tier": "pro", "quota": {"pods": "40"}},
        resources={"namespace": names.namespace},
        created_at=now,
        updated_at=now,
    )
    mysql_admin.write_tenant(mysql_root, ops, record)
    back = mysql_admin.read_tenant(mysql_root, ops, names.tenant)
    assert back == record
    assert back is not None and back.created_at == now and back.created_at.tzinfo is not None
    gone = record.model_copy(update={"status": "deprovisioned", "deprovisioned_at": now})
    mysql_admin.write_tenant(mysql_root, ops, gone)
    assert mysql_admin.read_tenant(mysql_root, ops, names.tenant).status == "deprovisioned"
    assert mysql_admin.list_tenants(mysql_root, ops) == [names.tenant]
    mysql_admin.delete_tenant_row(mysql_root, ops, names.tenant)
    assert mysql_admin.read_tenant(mysql_root, ops, names.tenant) is None
    mysql_admin.drop_database(mysql_root, ops)
