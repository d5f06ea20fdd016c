"""`objectos user create`: how a hub gets its first administrator (no Ray involved).

The command writes the account into the hub's own database; the identity the
HTTP replicas build from the same manifest then signs it in with its roles.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from deployments.cli import EXIT_BAD_INPUT, EXIT_OK, main
from objectos.api.auth import build_identity
from objectos.errors import Unauthenticated
from objectos.kernel.loader import load_hub

METADATA = Path(__file__).resolve().parents[3] / "configs" / "metadata"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A hub manifest on a fresh SQLite file with the sample CRM's security metadata."""
    path = tmp_path / "objectos.yaml"
    path.write_text(
        "id: com.test.hub\n"
        "dataDir: .objectos\n"
        'database: {url: "sqlite+aiosqlite:///{dataDir}/objectos.db"}\n'
        f"metadata: ['{METADATA}']\n"
        "auth:\n"
        "  passwordHashing: {timeCost: 1, memoryCostKib: 64, parallelism: 1}\n"
    )
    return path


def create(config: Path, *args: str) -> int:
    return main(["user", "create", "--config", str(config), *args])


async def sign_in(config: Path, email: str, password: str) -> tuple[str, ...]:
    """Sign in the way a replica does; the roles the access token carries."""
    hub = load_hub(config)
    identity, authenticator = build_identity(hub.auth, hub.database.url, hub.dataDir)
    try:
        session = await identity.sign_in(email, password)
        auth = await authenticator.authenticate_token(session.tokens.access_token)
        return tuple(sorted(auth.actor.roles))
    finally:
        await identity.aclose()


def test_the_first_admin_is_created_and_signs_in_with_its_roles(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = create(
        config, "--email", "root@example.com", "--password", PASSWORD, "--roles", "ceo,admin"
    )

    assert code == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    assert printed["email"] == "root@example.com"
    assert printed["roles"] == ["admin", "ceo"]
    assert "password" not in json.dumps(printed).lower()
    assert asyncio.run(sign_in(config, "root@example.com", PASSWORD)) == ("admin", "ceo")


def test_the_password_can_come_from_stdin(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))

    assert create(config, "--email", "rep@example.com", "--roles", "east_rep") == EXIT_OK
    assert asyncio.run(sign_in(config, "rep@example.com", PASSWORD)) == ("east_rep",)


def test_a_misspelt_role_is_refused_and_nothing_is_created(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = create(config, "--email", "x@example.com", "--password", PASSWORD, "--roles", "ceo,admn")

    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "unknown role(s): admn" in err
    with pytest.raises(Unauthenticated):
        asyncio.run(sign_in(config, "x@example.com", PASSWORD))


def test_bad_input_is_reported_per_field(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert create(config, "--email", "not-an-email", "--password", "short") == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "email" in err and "password" in err

    assert create(config, "--email", "dup@example.com", "--password", PASSWORD) == EXIT_OK
    capsys.readouterr()
    assert create(config, "--email", "dup@example.com", "--password", PASSWORD) == EXIT_BAD_INPUT
    assert "dup@example.com" not in capsys.readouterr().out


# -- service accounts ---------------------------------------------------------------------


def create_service(config: Path, *args: str) -> int:
    return main(["service-account", "create", "--config", str(config), *args])


async def authenticate_key(config: Path, key: str) -> tuple[str, str, tuple[str, ...]]:
    """(method, user id, roles) of an API key, verified the way a replica verifies it."""
    hub = load_hub(config)
    identity, authenticator = build_identity(hub.auth, hub.database.url, hub.dataDir)
    try:
        auth = await authenticator.authenticate_token(key)
        assert auth.actor.user_id is not None
        return auth.method, auth.actor.user_id, tuple(sorted(auth.actor.roles))
    finally:
        await identity.aclose()


def test_a_service_account_is_created_with_a_key_shown_once(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert create_service(config, "--name", "prometheus") == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "service" and printed["name"] == "prometheus"
    assert printed["roles"] == []
    key = printed["apiKey"]
    assert key.startswith("oos_") and printed["keyId"] in key
    assert asyncio.run(authenticate_key(config, key)) == ("api_key", printed["id"], ())

    assert create_service(config, "--name", "etl", "--roles", "read_only") == EXIT_OK
    etl = json.loads(capsys.readouterr().out)
    assert asyncio.run(authenticate_key(config, etl["apiKey"]))[2] == ("read_only",)


def test_a_service_account_with_a_misspelt_role_is_refused(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert create_service(config, "--name", "etl", "--roles", "read_onyl") == EXIT_BAD_INPUT
    assert "unknown role(s): read_onyl" in capsys.readouterr().err
