"""The one table of what each role may do (schemas/accounts.py ROLE_PERMISSIONS), its
enforcement (api/auth.py require_permission), and the statements that record attempts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.dialects import postgresql

from api.auth import require_act_jobs, require_admin, require_permission, require_read
from api.context import Principal
from pipelines.db import jobs as jobs_db
from pipelines.errors import PermissionDenied
from schemas.accounts import ROLES, UserCreate, UserUpdate

EXPECTED = {  # role -> (read, act_jobs, admin)
    "admin": (True, True, True),
    "operator": (True, True, False),
    "viewer": (True, False, False),
    "user": (False, False, False),
    "root": (False, False, False),  # a role nobody defined may do nothing
    "": (False, False, False),
}


def _conn(role: str) -> Any:
    who = Principal(id="u1", role=role)
    return SimpleNamespace(scope={"state": {"principal": who}})


@pytest.mark.parametrize("role", list(EXPECTED))
def test_each_role_has_exactly_its_permissions(role: str) -> None:
    conn = _conn(role)
    for check, allowed in zip((require_read, require_act_jobs, require_admin), EXPECTED[role],
                              strict=True):
        if allowed:
            assert check(conn).role == role
        else:
            with pytest.raises(PermissionDenied) as denied:
                check(conn)
            assert denied.value.details["role"] == role
    granted = [p for p, ok in zip(("read", "act_jobs", "admin"), EXPECTED[role], strict=True)
               if ok]
    assert Principal(id="u1", role=role).permissions == sorted(granted)


def test_only_admins_are_admins() -> None:
    assert [role for role in ROLES if Principal(id="u", role=role).is_admin] == ["admin"]
    with pytest.raises(PermissionDenied):
        require_permission(_conn("operator"), "admin")


def test_accounts_take_the_four_roles_and_nothing_else() -> None:
    for role in ROLES:
        assert UserCreate(email="a@b.co", password="long enough", role=role).role == role
        assert UserUpdate(role=role).role == role
    with pytest.raises(ValidationError):
        UserCreate(email="a@b.co", password="long enough", role="root")  # type: ignore[arg-type]


def _sql(statement: Any, params: dict[str, Any]) -> str:
    """As executed: SQLAlchemy compiles with the parameters' names as `column_keys`, and an
    UPDATE's SET takes any of them named like one of its table's columns."""
    return str(statement.compile(dialect=postgresql.asyncpg.dialect(),
                                 column_keys=list(params)))


def test_the_claim_records_the_attempt_in_the_same_statement() -> None:
    statement, params = jobs_db.mark_running("j1", jobs_db.Worker("host-a", 42))
    sql = _sql(statement, params)
    assert sql.startswith("WITH claimed AS") and "INSERT INTO job_attempts" in sql
    # Earlier unfinished attempts become lost, and nothing else of theirs changes.
    assert "UPDATE job_attempts SET outcome=$" in sql and "SET job_id" not in sql
    assert params == {"job": "j1", "by_worker": "host-a:42", "by_host": "host-a",
                      "by_pid": 42}


@pytest.mark.parametrize("bound", [jobs_db.mark_succeeded("j1", 1, {}),
                                   jobs_db.mark_failed("j1", 1, {"code": "X"}),
                                   jobs_db.end_attempt("j1", 1, "retried")])
def test_the_terminal_statements_finish_the_attempt(bound: Any) -> None:
    sql = _sql(*bound)
    assert "UPDATE job_attempts SET finished_at=now(), outcome=" in sql
    assert "job_id=" not in sql.split("SET", 2)[-1].split("WHERE")[0]
