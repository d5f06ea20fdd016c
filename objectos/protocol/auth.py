"""Auth protocol: the ``auth:`` section of the hub manifest (``configs/objectos.yaml``).

Everything the identity layer needs to build itself on a Serve replica comes
from :class:`AuthSettings`, a database URL and the data directory
(:func:`objectos.api.auth.build_identity`). Example::

    auth:
      issuer: https://hub.example.com
      audience: objectos
      accessTtlS: 900
      allowSignUp: true
      oidc:
        - issuer: https://login.example.com/realms/acme
          audience: objectos-hub
          rolesClaim: realm_access.roles
          roleMap: {hub-admins: admin, staff: user}

Without ``keys`` the hub generates a signing key on first start and keeps it
in ``<dataDir>/signing-keys.json`` (0600); replicas sharing the data directory
share the key, and a rotation made by one is picked up by the others.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from objectos.protocol._base import ProtocolModel

#: Signature algorithms an external provider may use (never HMAC, never ``none``).
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")


class PasswordPolicy(ProtocolModel):
    """What a new password must look like (NIST SP 800-63B: length, not composition rules)."""

    minLength: int = Field(12, ge=8, le=256, description="Fewest characters a password may have.")
    maxLength: int = Field(
        256,
        ge=64,
        le=4096,
        description="Most characters a password may have; bounds the hashing work per request.",
    )
    forbidEmail: bool = Field(
        True, description="Refuse passwords that contain the account's email or its local part."
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> PasswordPolicy:
        if self.maxLength < self.minLength:
            raise ValueError("maxLength must be at least minLength")
        return self


class PasswordHashing(ProtocolModel):
    """argon2id cost; raising any value upgrades stored hashes at each user's next sign-in."""

    timeCost: int = Field(3, ge=1, le=20, description="Passes over memory.")
    memoryCostKib: int = Field(
        65536, ge=64, le=4 * 1024 * 1024, description="Memory per hash, in KiB."
    )
    parallelism: int = Field(4, ge=1, le=64, description="Lanes (threads) per hash.")

    @model_validator(mode="after")
    def _check_memory(self) -> PasswordHashing:
        if self.memoryCostKib < 8 * self.parallelism:
            raise ValueError("memoryCostKib must be at least 8 x parallelism (argon2's minimum)")
        return self


class ThrottleSettings(ProtocolModel):
    """Sign-in lockouts, counted in the database so every replica sees every failure."""

    maxFailures: int = Field(5, ge=1, description="Failures per account inside windowS that lock.")
    ipMaxFailures: int | None = Field(
        None, ge=1, description="Failures per client IP that lock it (default 4 x maxFailures)."
    )
    windowS: float = Field(900.0, gt=0, description="Sliding window over which failures count.")
    lockoutS: float = Field(60.0, gt=0, description="First lockout; each repeat doubles it.")
    maxLockoutS: float = Field(3600.0, gt=0, description="Longest lockout.")

    @model_validator(mode="after")
    def _check_lockouts(self) -> ThrottleSettings:
        if self.maxLockoutS < self.lockoutS:
            raise ValueError("maxLockoutS must be at least lockoutS")
        return self


class OIDCProviderSettings(ProtocolModel):
    """An external OpenID Connect provider whose tokens the hub accepts."""

    issuer: str = Field(description="The provider's issuer URL, exactly as in its tokens' iss.")
    audience: str = Field(description="Our client id: tokens must name it in aud.")
    jwksUri: str | None = Field(
        None, description="Where its keys are; default: discovered from the issuer."
    )
    rolesClaim: str = Field(
        "groups", description="Claim (or dotted path, e.g. realm_access.roles) holding roles."
    )
    roleMap: dict[str, str] | None = Field(
        None,
        description="Provider role -> hub role. When set, provider roles not listed are dropped;"
        " when absent, provider roles are used as they are.",
    )
    defaultRoles: list[str] = Field(
        default_factory=list, description="Hub roles every user of this provider gets."
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"],
        description="Signature algorithms accepted from this provider.",
    )
    leewayS: float = Field(60.0, ge=0, le=600, description="Clock skew tolerated on exp/nbf/iat.")
    cacheTtlS: float = Field(3600.0, gt=0, description="How long its JWKS is cached.")
    autoProvision: bool = Field(
        True,
        description="Create a hub user on an identity's first visit; when false only identities"
        " linked beforehand are accepted.",
    )

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, value: list[str]) -> list[str]:
        refused = [alg for alg in value if alg not in OIDC_ALGORITHMS]
        if refused or not value:
            raise ValueError(
                f"algorithms must be asymmetric signature algorithms from {list(OIDC_ALGORITHMS)}"
            )
        return value


class AuthSettings(ProtocolModel):
    """Identity settings of a hub: tokens, keys, providers, throttling, password rules."""

    issuer: str = Field("objectos-hub", description="iss of the hub's own access tokens.")
    audience: str = Field("objectos", description="aud of the hub's own access tokens.")
    accessTtlS: float = Field(900.0, gt=0, le=86400, description="Access token lifetime.")
    refreshTtlS: float = Field(
        30 * 86400.0, gt=0, description="Refresh token lifetime (one session's longest idle gap)."
    )
    leewayS: float = Field(
        5.0, ge=0, le=300, description="Clock skew between replicas tolerated on exp/nbf/iat."
    )
    keys: list[str | dict[str, Any]] | None = Field(
        None,
        description="Signing keys as PEM strings or JWK objects; the first signs, the rest only"
        " verify. Absent: generated and kept in <dataDir>/signing-keys.json.",
    )
    algorithm: Literal["EdDSA", "ES256", "RS256"] = Field(
        "EdDSA", description="Algorithm of generated keys."
    )
    keyRetireAfterS: float = Field(
        86400.0,
        gt=0,
        description="How long a rotated-out key keeps verifying (at least accessTtlS).",
    )
    keyReloadIntervalS: float = Field(
        60.0, gt=0, description="How often a replica re-reads the key file to see rotations."
    )
    allowSignUp: bool = Field(False, description="Anyone may create an account with sign-up.")
    defaultRoles: list[str] = Field(
        default_factory=lambda: ["user"], description="Roles of accounts made by sign-up."
    )
    passwordPolicy: PasswordPolicy = Field(
        default_factory=PasswordPolicy, description="Rules for new passwords."
    )
    passwordHashing: PasswordHashing = Field(
        default_factory=PasswordHashing, description="argon2id cost."
    )
    throttle: ThrottleSettings = Field(
        default_factory=ThrottleSettings, description="Sign-in lockouts."
    )
    oidc: list[OIDCProviderSettings] = Field(
        default_factory=list, description="External OpenID Connect providers."
    )
    trustedProxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDRs of proxies whose X-Forwarded-For names the client IP"
        " (sign-in throttling counts per client IP).",
    )
    realm: str = Field("objectos", description="realm of WWW-Authenticate challenges.")

    @field_validator("keys")
    @classmethod
    def _check_keys(cls, value: list[str | dict[str, Any]] | None) -> Any:
        if value is None:
            return None
        if not value:
            raise ValueError("keys must list at least one key, or be left out")
        for index, key in enumerate(value):
            if isinstance(key, str) and "-----BEGIN" not in key:
                raise ValueError(f"keys[{index}] is not a PEM key")
            if isinstance(key, dict) and "kty" not in key:
                raise ValueError(f"keys[{index}] is not a JWK (no kty)")
        return value

    @field_validator("trustedProxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR") from None
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> AuthSettings:
        if self.refreshTtlS < self.accessTtlS:
            raise ValueError("refreshTtlS must be at least accessTtlS")
        if self.keyRetireAfterS < self.accessTtlS:
            raise ValueError(
                "keyRetireAfterS must be at least accessTtlS, or a key rotation would cut"
                " live sessions short"
            )
        seen = {self.issuer}
        for provider in self.oidc:
            if provider.issuer in seen:
                raise ValueError(f"issuer {provider.issuer!r} is configured twice")
            seen.add(provider.issuer)
        return self


__all__ = [
    "OIDC_ALGORITHMS",
    "AuthSettings",
    "OIDCProviderSettings",
    "PasswordHashing",
    "PasswordPolicy",
    "ThrottleSettings",
]
