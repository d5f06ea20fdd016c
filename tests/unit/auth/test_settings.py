"""AuthSettings: defaults that are safe, and configurations that cannot work refused up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from objectos.api.auth import build_identity
from objectos.errors import ConfigError
from objectos.protocol.auth import AuthSettings
from objectos.security.keys import KEY_FILE_NAME, generate_signing_key

from .conftest import FAST_HASHING, IDP_ISSUER, OIDC_PROVIDER, PASSWORD


def test_the_defaults_are_closed_and_short_lived() -> None:
    settings = AuthSettings()
    assert settings.allowSignUp is False
    assert settings.accessTtlS == 900
    assert settings.keys is None and settings.algorithm == "EdDSA"
    assert settings.passwordPolicy.minLength >= 12
    assert settings.trustedProxies == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"accessTtlS": 3600, "refreshTtlS": 60}, "refreshTtlS must be at least accessTtlS"),
        ({"accessTtlS": 3600, "keyRetireAfterS": 60}, "keyRetireAfterS must be at least"),
        ({"oidc": [OIDC_PROVIDER, OIDC_PROVIDER]}, "configured twice"),
        ({"issuer": IDP_ISSUER, "oidc": [OIDC_PROVIDER]}, "configured twice"),
        ({"oidc": [{**OIDC_PROVIDER, "algorithms": ["HS256"]}]}, "asymmetric"),
        ({"oidc": [{**OIDC_PROVIDER, "algorithms": ["none"]}]}, "asymmetric"),
        ({"trustedProxies": ["10.0.0.0/8", "not-an-ip"]}, "not an IP address or CIDR"),
        ({"keys": []}, "at least one key"),
        ({"keys": ["secret"]}, "not a PEM key"),
        ({"keys": [{"x": "y"}]}, "not a JWK"),
        ({"passwordPolicy": {"minLength": 4}}, "greater than or equal to 8"),
        ({"passwordHashing": {"memoryCostKib": 64, "parallelism": 16}}, "at least 8 x"),
        ({"throttle": {"lockoutS": 600, "maxLockoutS": 60}}, "maxLockoutS must be at least"),
        ({"allowSignup": True}, "Extra inputs are not permitted"),
    ],
)
def test_configurations_that_cannot_work_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AuthSettings.model_validate(values)


async def test_configured_keys_sign_and_nothing_is_written_to_the_data_dir(
    tmp_path: Path,
) -> None:
    key = generate_signing_key("ES256", now=0)
    settings = AuthSettings.model_validate(
        {
            "keys": [key.jwk.as_dict(is_private=True)],
            "allowSignUp": True,
            "passwordHashing": FAST_HASHING,
        }
    )
    identity, authenticator = build_identity(
        settings, f"sqlite+aiosqlite:///{tmp_path}/hub.db", tmp_path / "data"
    )
    try:
        await identity.sign_up("ada@example.test", PASSWORD)
        session = await identity.sign_in("ada@example.test", PASSWORD)
        auth = await authenticator.authenticate_token(session.tokens.access_token)
        assert auth.actor.user_id == session.user.id
        assert authenticator.jwks()["keys"][0]["kid"] == key.kid
        assert not (tmp_path / "data" / KEY_FILE_NAME).exists()
    finally:
        await identity.aclose()


async def test_a_generated_key_is_kept_owner_only_in_the_data_dir(tmp_path: Path) -> None:
    identity, authenticator = build_identity(
        AuthSettings(), "sqlite+aiosqlite:///{dataDir}/hub.db", tmp_path
    )
    try:
        key_file = tmp_path / KEY_FILE_NAME
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert authenticator.jwks()["keys"][0]["alg"] == "EdDSA"
        assert (tmp_path / "hub.db").exists() is False  # tables are made on first use
    finally:
        await identity.aclose()


def test_an_unsupported_database_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SQLite and PostgreSQL"):
        build_identity(AuthSettings(), "mysql+aiomysql://localhost/db", tmp_path)
