"""The hub's signing keys: one current key that signs, older keys that still verify.

A :class:`KeyRing` holds :class:`SigningKey` s, each with a ``kid`` (its RFC 7638
JWK thumbprint unless configured otherwise) that tokens name in their header.
Rotation adds a new current key and *retires* the previous one: a retired key
signs nothing more but keeps verifying until ``verify_until`` (rotation time +
``retire_after_s``, which must be at least the access-token lifetime), so
tokens issued just before a rotation stay valid for their whole life.

Where keys come from:

- **Generated** (the default): on first start the ring generates a key and
  persists it through a :class:`KeyStore`; :class:`FileKeyStore` writes
  ``signing-keys.json`` (mode 0600) in the data directory. Two processes that
  start at once agree on one key set because the file is created atomically
  (written to a temporary file, then hard-linked into place, which fails if
  the name exists) and the loser re-reads the winner's file.
- **Configured**: :meth:`KeyRing.from_config` takes PEM strings or JWK dicts;
  the first is current, the rest only verify. Rotation is then the
  operator's job (edit the configuration), so :meth:`KeyRing.rotate` refuses.

The default algorithm is EdDSA over Ed25519 (small keys, fast, deterministic
signatures with no nonce to get wrong); ES256 and RS256 are supported for
consumers that cannot verify EdDSA.

Every replica holds its own ring. A replica re-reads the store every
``reload_interval_s`` and, rate-limited by ``min_reload_interval_s``, when it
meets a ``kid`` it does not know, so a rotation made by one process reaches
the others without a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import stat
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from authlib.deprecate import AuthlibDeprecationWarning

from objectos.errors import ConfigError

with warnings.catch_warnings():
    # authlib.jose warns that it will move to joserfc in authlib 2.0; the
    # project standardises on authlib.jose for now, so the warning is noise
    # in every process start. It is silenced for this import only (authlib.deprecate
    # is imported first because importing it installs an "always" filter).
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey, Key

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds since the epoch; injected so tests can move time."""

#: Signing algorithms the hub can use for its own keys: alg -> (kty, curve or RSA bits).
ALGORITHMS: Mapping[str, tuple[str, str | int]] = {
    "EdDSA": ("OKP", "Ed25519"),
    "ES256": ("EC", "P-256"),
    "RS256": ("RSA", 2048),
}
DEFAULT_ALGORITHM = "EdDSA"
DEFAULT_RETIRE_AFTER_S = 24 * 3600.0
KEY_FILE_NAME = "signing-keys.json"
FILE_FORMAT = "objectos.signing-keys/1"


@dataclass(frozen=True)
class SigningKey:
    """One key of the ring and its place in the rotation.

    ``retired_at`` is when it stopped signing (None while it is current or
    when it came from configuration); ``verify_until`` is when it stops
    verifying (None: until removed).
    """

    kid: str
    alg: str
    jwk: Key
    created_at: float
    retired_at: float | None = None
    verify_until: float | None = None

    @property
    def is_private(self) -> bool:
        """Whether this key can sign (configured verify-only keys cannot)."""
        return not self.jwk.public_only

    def verifies_at(self, now: float) -> bool:
        """Whether a token signed by this key may still be accepted at ``now``."""
        return self.verify_until is None or now < self.verify_until

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK as published in ``/.well-known/jwks.json``."""
        public = dict(self.jwk.as_dict(is_private=False))
        public.update(kid=self.kid, alg=self.alg, use="sig")
        return public

    def to_dict(self) -> dict[str, Any]:
        """The persisted form, private key material included."""
        return {
            "kid": self.kid,
            "alg": self.alg,
            "createdAt": self.created_at,
            "retiredAt": self.retired_at,
            "verifyUntil": self.verify_until,
            "jwk": dict(self.jwk.as_dict(is_private=self.is_private)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SigningKey:
        """Rebuild a key from :meth:`to_dict` output; raises ValueError/KeyError if malformed."""
        key = import_signing_key(data["jwk"], alg=data["alg"], kid=data["kid"])
        return replace(
            key,
            created_at=float(data["createdAt"]),
            retired_at=_optional_float(data.get("retiredAt")),
            verify_until=_optional_float(data.get("verifyUntil")),
        )


def generate_signing_key(alg: str = DEFAULT_ALGORITHM, *, now: float) -> SigningKey:
    """A fresh private key for ``alg``, its kid being its JWK thumbprint."""
    if alg not in ALGORITHMS:
        raise ConfigError(
            f"unsupported signing algorithm {alg!r}",
            details={"algorithm": alg, "supported": sorted(ALGORITHMS)},
        )
    kty, crv_or_size = ALGORITHMS[alg]
    jwk = JsonWebKey.generate_key(kty, crv_or_size, is_private=True)
    kid = jwk.thumbprint()
    jwk.options.update(kid=kid, alg=alg, use="sig")
    return SigningKey(kid=kid, alg=alg, jwk=jwk, created_at=now)


def import_signing_key(
    raw: str | bytes | Mapping[str, Any],
    *,
    alg: str | None = None,
    kid: str | None = None,
    now: float = 0.0,
) -> SigningKey:
    """A key from a PEM string/bytes or a JWK dict.

    ``alg`` defaults to the JWK's ``alg`` or else to what the key type implies
    (Ed25519 -> EdDSA, P-256 -> ES256, RSA -> RS256); ``kid`` defaults to the
    JWK's ``kid`` or else its thumbprint. A key whose type does not fit its
    algorithm is refused here, so a mismatch can never reach verification.
    """
    try:
        jwk = JsonWebKey.import_key(dict(raw) if isinstance(raw, Mapping) else raw)
    except Exception as exc:  # authlib raises ValueError, TypeError, cryptography errors
        raise ConfigError(
            "signing key is neither a valid PEM key nor a valid JWK",
            details={"reason": type(exc).__name__},
        ) from exc
    tokens = jwk.tokens
    alg = alg or tokens.get("alg") or _implied_algorithm(tokens)
    if alg is None or alg not in ALGORITHMS:
        raise ConfigError(
            f"unsupported signing algorithm {alg!r}",
            details={"algorithm": alg, "supported": sorted(ALGORITHMS)},
        )
    kty, crv_or_size = ALGORITHMS[alg]
    if tokens["kty"] != kty or (isinstance(crv_or_size, str) and tokens.get("crv") != crv_or_size):
        raise ConfigError(
            f"a {tokens['kty']} key cannot sign {alg}",
            details={"algorithm": alg, "kty": tokens["kty"], "crv": tokens.get("crv")},
        )
    kid = kid or tokens.get("kid") or jwk.thumbprint()
    jwk.options.update(kid=kid, alg=alg, use="sig")
    return SigningKey(kid=kid, alg=alg, jwk=jwk, created_at=now)


def _implied_algorithm(tokens: Mapping[str, Any]) -> str | None:
    for alg, (kty, crv_or_size) in ALGORITHMS.items():
        curve_fits = isinstance(crv_or_size, int) or tokens.get("crv") == crv_or_size
        if tokens["kty"] == kty and curve_fits:
            return alg
    return None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@runtime_checkable
class KeyStore(Protocol):
    """Where a :class:`KeyRing` persists its keys (a file here; a database later)."""

    def load(self) -> list[SigningKey] | None:
        """The stored keys, or None when nothing has been stored yet."""
        ...

    def save(self, keys: Sequence[SigningKey], *, create: bool = False) -> bool:
        """Store ``keys``, replacing what is there.

        With ``create=True`` store them only if nothing is stored yet, as one
        atomic step; return False (storing nothing) when something already is.
        """
        ...


class FileKeyStore:
    """Keys in one JSON file, readable by its owner only (mode 0600).

    Format::

        {"format": "objectos.signing-keys/1",
         "keys": [{"kid": "...", "alg": "EdDSA", "createdAt": 1700000000.0,
                   "retiredAt": null, "verifyUntil": null,
                   "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "...", "d": "...", ...}}]}

    Every write goes to a temporary file first, so readers never see half a
    file: creation hard-links it into place (fails if the name exists, which
    is what makes a concurrent first start safe), replacement renames it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """``path`` is the key file; its directory is created (0700) on first save."""
        self.path = Path(path)

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike[str]) -> FileKeyStore:
        """The store at ``<data_dir>/signing-keys.json``."""
        return cls(Path(data_dir) / KEY_FILE_NAME)

    def load(self) -> list[SigningKey] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning(
                "signing key file %s is accessible to other users; chmod 600 it", self.path
            )
        try:
            document = json.loads(text)
            if document.get("format") != FILE_FORMAT:
                raise ValueError(f"unknown format {document.get('format')!r}")
            return [SigningKey.from_dict(entry) for entry in document["keys"]]
        except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
            raise ConfigError(
                "signing key file is damaged",
                details={"path": str(self.path), "reason": str(exc) or type(exc).__name__},
            ) from exc

    def save(self, keys: Sequence[SigningKey], *, create: bool = False) -> bool:
        document = {"format": FILE_FORMAT, "keys": [key.to_dict() for key in keys]}
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(document, file, indent=2)
                file.flush()
                os.fsync(file.fileno())
            if create:
                try:
                    os.link(temp, self.path)
                except FileExistsError:
                    return False
            else:
                os.replace(temp, self.path)
            self._sync_directory()
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def _sync_directory(self) -> None:
        # The new directory entry must survive a crash too, or a restart
        # would generate a second key set after tokens were signed by the first.
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError:  # some filesystems cannot fsync a directory; best effort
            pass
        finally:
            os.close(fd)


class KeyRing:
    """The current signing key plus the retired keys that still verify.

    Build it with :meth:`open` (generated and persisted keys) or
    :meth:`from_config` (operator-supplied keys).
    """

    def __init__(
        self,
        keys: Sequence[SigningKey],
        *,
        store: KeyStore | None = None,
        algorithm: str = DEFAULT_ALGORITHM,
        retire_after_s: float = DEFAULT_RETIRE_AFTER_S,
        clock: Clock = time.time,
        reload_interval_s: float = 60.0,
        min_reload_interval_s: float = 5.0,
    ) -> None:
        """Wrap ``keys``; ``store`` (if any) is where :meth:`rotate` and :meth:`reload` go.

        ``algorithm`` is used for keys made by :meth:`rotate`.
        ``retire_after_s`` is how long a key verifies after it stopped signing.
        """
        if algorithm not in ALGORITHMS:
            raise ConfigError(
                f"unsupported signing algorithm {algorithm!r}",
                details={"algorithm": algorithm, "supported": sorted(ALGORITHMS)},
            )
        if retire_after_s <= 0:
            raise ConfigError("retire_after_s must be positive", details={"value": retire_after_s})
        self._store = store
        self._algorithm = algorithm
        self._retire_after_s = retire_after_s
        self._clock = clock
        self._reload_interval_s = reload_interval_s
        self._min_reload_interval_s = min_reload_interval_s
        self._keys: dict[str, SigningKey] = {}
        self._current: SigningKey
        self._install(keys)
        self._loaded_at = clock()

    @classmethod
    def open(
        cls,
        store: KeyStore,
        *,
        algorithm: str = DEFAULT_ALGORITHM,
        retire_after_s: float = DEFAULT_RETIRE_AFTER_S,
        clock: Clock = time.time,
        reload_interval_s: float = 60.0,
        min_reload_interval_s: float = 5.0,
    ) -> KeyRing:
        """Load the stored keys, generating and storing a first key if there are none.

        If another process stores its first key between our load and our
        save, ours is dropped and theirs is used, so all processes agree.
        """
        keys = store.load()
        if keys is None:
            fresh = [generate_signing_key(algorithm, now=clock())]
            if store.save(fresh, create=True):
                logger.info("generated signing key %s (%s)", fresh[0].kid, algorithm)
                keys = fresh
            else:
                keys = store.load()
                if keys is None:
                    raise ConfigError("signing keys vanished while they were being created")
        return cls(
            keys,
            store=store,
            algorithm=algorithm,
            retire_after_s=retire_after_s,
            clock=clock,
            reload_interval_s=reload_interval_s,
            min_reload_interval_s=min_reload_interval_s,
        )

    @classmethod
    def from_config(
        cls,
        keys: Sequence[str | bytes | Mapping[str, Any]],
        *,
        retire_after_s: float = DEFAULT_RETIRE_AFTER_S,
        clock: Clock = time.time,
    ) -> KeyRing:
        """A ring of configured keys (PEM or JWK): the first signs, the others only verify."""
        if not keys:
            raise ConfigError("no signing keys configured")
        now = clock()
        # Later keys get older timestamps so that the first one is "newest",
        # which is how the ring picks its current key.
        imported = [import_signing_key(raw, now=now - index) for index, raw in enumerate(keys)]
        return cls(imported, algorithm=imported[0].alg, retire_after_s=retire_after_s, clock=clock)

    @property
    def retire_after_s(self) -> float:
        """How long a key keeps verifying after a rotation retired it."""
        return self._retire_after_s

    @property
    def current(self) -> SigningKey:
        """The key that signs new tokens (re-read from the store when due)."""
        if self._store is not None and self._clock() - self._loaded_at >= self._reload_interval_s:
            self._reload_keeping_keys_on_error()
        return self._current

    @property
    def algorithms(self) -> list[str]:
        """The algorithms of the keys that verify right now."""
        now = self._clock()
        return sorted({key.alg for key in self._keys.values() if key.verifies_at(now)})

    def find(self, kid: str) -> SigningKey | None:
        """The key named ``kid`` if it may verify a token now, else None.

        An unknown kid may have been made by a rotation in another process,
        so the store is re-read — at most once per ``min_reload_interval_s``,
        so that tokens with made-up kids cannot turn into a flood of reads.
        """
        key = self._keys.get(kid)
        if (
            key is None
            and self._store is not None
            and self._clock() - self._loaded_at >= self._min_reload_interval_s
        ):
            self._reload_keeping_keys_on_error()
            key = self._keys.get(kid)
        if key is None or not key.verifies_at(self._clock()):
            return None
        return key

    def rotate(self) -> SigningKey:
        """Make a new current key; the previous one verifies for ``retire_after_s`` more.

        Keys whose verification period is over are dropped. Returns the new key.
        Run rotation from one process (an operator command or the kernel);
        the other replicas pick it up on their next reload.
        """
        if self._store is None:
            raise ConfigError(
                "signing keys come from configuration; rotate them there",
                details={"hint": "put the new key first and keep the old one listed"},
            )
        self.reload()
        now = self._clock()
        new_key = generate_signing_key(self._algorithm, now=now)
        kept = [
            key
            if key.retired_at is not None
            else replace(key, retired_at=now, verify_until=now + self._retire_after_s)
            for key in self._keys.values()
            if key.verifies_at(now)
        ]
        keys = [*kept, new_key]
        self._store.save(keys)
        self._install(keys)
        self._loaded_at = now
        logger.info("rotated signing key: %s is current", new_key.kid)
        return new_key

    def reload(self) -> None:
        """Re-read the keys from the store (no-op for configured keys)."""
        self._loaded_at = self._clock()
        if self._store is None:
            return
        keys = self._store.load()
        if keys is None:
            logger.warning("signing key store is empty; keeping the keys in memory")
            return
        self._install(keys)

    def _reload_keeping_keys_on_error(self) -> None:
        # A damaged or unreadable store must not fail the request that
        # happened to trigger the reload: keep serving the keys we have.
        try:
            self.reload()
        except (ConfigError, OSError):
            logger.exception("could not re-read signing keys; keeping the ones in memory")

    def public_jwks(self) -> dict[str, Any]:
        """The JWKS document for ``/.well-known/jwks.json`` (current key first)."""
        now = self._clock()
        others = [
            key.public_jwk()
            for key in self._keys.values()
            if key is not self._current and key.verifies_at(now)
        ]
        return {"keys": [self._current.public_jwk(), *others]}

    def _install(self, keys: Sequence[SigningKey]) -> None:
        by_kid: dict[str, SigningKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise ConfigError("two signing keys share a kid", details={"kid": key.kid})
            by_kid[key.kid] = key
        signers = [key for key in keys if key.is_private and key.retired_at is None]
        if not signers:
            raise ConfigError(
                "no key can sign: the current key must be a private key that is not retired"
            )
        self._keys = by_kid
        self._current = max(signers, key=lambda key: key.created_at)


__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "DEFAULT_RETIRE_AFTER_S",
    "KEY_FILE_NAME",
    "Clock",
    "FileKeyStore",
    "KeyRing",
    "KeyStore",
    "SigningKey",
    "generate_signing_key",
    "import_signing_key",
]
