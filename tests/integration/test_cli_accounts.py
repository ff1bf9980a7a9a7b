"""`switchyard users create` and `switchyard keys create`: the first admin and their key."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import create_engine, select

from pipelines import accounts
from pipelines.db.engine import sync_url
from pipelines.db.tables import api_keys, users
from tests.integration.accounts import unique_email
from tests.integration.conftest import PROJECT_DIR


def _cli(database_url: str, *args: str,
         extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=60)


def test_the_cli_creates_an_admin_and_prints_their_key_once(database_url: str) -> None:
    email = unique_email("cli-admin")
    created = _cli(database_url, "users", "create", "--email", email.upper(), "--admin",
                   extra_env={"SWITCHYARD_USER_PASSWORD": "a long enough password"})
    assert created.returncode == 0, created.stderr
    assert "a long enough password" not in created.stdout + created.stderr
    again = _cli(database_url, "users", "create", "--email", email,
                 extra_env={"SWITCHYARD_USER_PASSWORD": "a long enough password"})
    assert again.returncode == 1 and "already exists" in again.stderr

    keyed = _cli(database_url, "keys", "create", "--email", email, "--name", "bootstrap")
    assert keyed.returncode == 0, keyed.stderr
    key = keyed.stdout.strip()
    assert accounts.looks_like_api_key(key) and key not in keyed.stderr

    engine = create_engine(sync_url(database_url))
    with engine.connect() as conn:
        user = conn.execute(select(users).where(users.c.email == email)).one()
        stored = conn.execute(select(api_keys).where(api_keys.c.user_id == user.id)).one()
    engine.dispose()
    assert user.role == "admin" and accounts.verify_password(user.password_hash,
                                                             "a long enough password")
    assert stored.key_hash == accounts.key_digest(key) and stored.name == "bootstrap"


def test_a_key_for_an_unknown_user_is_refused(database_url: str) -> None:
    result = _cli(database_url, "keys", "create", "--email", unique_email(), "--name", "x")
    assert result.returncode == 1 and "no user" in result.stderr
