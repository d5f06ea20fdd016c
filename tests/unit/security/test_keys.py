"""The key ring: generation and persistence, concurrent first start, rotation, config keys."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from objectos.errors import ConfigError
from objectos.security.keys import (
    FileKeyStore,
    KeyRing,
    SigningKey,
    generate_signing_key,
    import_signing_key,
)

from .conftest import ManualClock


def test_first_open_generates_a_key_and_persists_it_owner_only(
    key_store: FileKeyStore, clock: ManualClock
) -> None:
    ring = KeyRing.open(key_store, clock=clock)

    assert key_store.path.exists()
    assert stat.S_IMODE(key_store.path.stat().st_mode) == 0o600
    document = json.loads(key_store.path.read_text())
    assert document["format"] == "objectos.signing-keys/1"
    [entry] = document["keys"]
    assert entry["kid"] == ring.current.kid
    assert entry["alg"] == "EdDSA"
    assert "d" in entry["jwk"]  # the private key is what must survive a restart
    # Nothing but the key file is left behind (no temporary files).
    assert sorted(os.listdir(key_store.path.parent)) == ["signing-keys.json"]


def test_public_jwks_has_no_private_material(keyring: KeyRing) -> None:
    [jwk] = keyring.public_jwks()["keys"]
    assert jwk["kid"] == keyring.current.kid
    assert jwk["alg"] == "EdDSA" and jwk["use"] == "sig"
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    assert "d" not in jwk


def test_two_rings_on_one_data_dir_agree(tmp_path: Path, clock: ManualClock) -> None:
    first = KeyRing.open(FileKeyStore.in_data_dir(tmp_path), clock=clock)
    second = KeyRing.open(FileKeyStore.in_data_dir(tmp_path), clock=clock)
    assert first.current.kid == second.current.kid
    assert first.public_jwks() == second.public_jwks()


def test_create_only_save_refuses_to_overwrite(key_store: FileKeyStore) -> None:
    mine = [generate_signing_key(now=1.0)]
    theirs = [generate_signing_key(now=2.0)]
    assert key_store.save(mine, create=True) is True
    assert key_store.save(theirs, create=True) is False
    [loaded] = key_store.load() or []
    assert loaded.kid == mine[0].kid


class SeesNoFileOnFirstLoad(FileKeyStore):
    """A store whose first load happens just before another process creates the file."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.first_load = True

    def load(self) -> list[SigningKey] | None:
        if self.first_load:
            self.first_load = False
            return None
        return super().load()


def test_the_loser_of_a_first_start_race_adopts_the_winners_keys(
    key_store: FileKeyStore, clock: ManualClock
) -> None:
    winner = KeyRing.open(key_store, clock=clock)
    loser = KeyRing.open(SeesNoFileOnFirstLoad(key_store.path), clock=clock)
    assert loser.current.kid == winner.current.kid
    assert len(key_store.load() or []) == 1


def _open_ring_and_report_kid(data_dir: str, barrier: object, results: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    ring = KeyRing.open(FileKeyStore.in_data_dir(data_dir))
    results.put(ring.current.kid)  # type: ignore[attr-defined]


def test_processes_starting_together_end_with_one_key_set(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results = context.Queue()
    workers = [
        context.Process(target=_open_ring_and_report_kid, args=(str(tmp_path), barrier, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    kids = {results.get(timeout=60) for _ in workers}
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(kids) == 1
    assert [key.kid for key in FileKeyStore.in_data_dir(tmp_path).load() or []] == list(kids)


def test_rotation_keeps_the_old_key_verifying_until_it_retires(
    keyring: KeyRing, clock: ManualClock
) -> None:
    old = keyring.current
    clock.advance(10)
    new = keyring.rotate()

    assert keyring.current.kid == new.kid != old.kid
    assert keyring.find(old.kid) is not None
    assert {jwk["kid"] for jwk in keyring.public_jwks()["keys"]} == {old.kid, new.kid}
    assert keyring.public_jwks()["keys"][0]["kid"] == new.kid  # current first

    clock.advance(3600 - 1)
    assert keyring.find(old.kid) is not None
    clock.advance(1)
    assert keyring.find(old.kid) is None
    assert [jwk["kid"] for jwk in keyring.public_jwks()["keys"]] == [new.kid]


def test_rotation_persists_and_drops_keys_past_retirement(
    keyring: KeyRing, key_store: FileKeyStore, clock: ManualClock
) -> None:
    first = keyring.current
    second = keyring.rotate()
    [stored_first, stored_second] = key_store.load() or []
    assert stored_first.kid == first.kid and stored_first.retired_at == clock.now
    assert stored_first.verify_until == clock.now + 3600
    assert stored_second.kid == second.kid and stored_second.retired_at is None

    clock.advance(3600)
    third = keyring.rotate()
    assert [key.kid for key in key_store.load() or []] == [second.kid, third.kid]


def test_another_replica_sees_a_rotation_on_an_unknown_kid_rate_limited(
    key_store: FileKeyStore, clock: ManualClock
) -> None:
    rotator = KeyRing.open(key_store, clock=clock)
    replica = KeyRing.open(key_store, clock=clock, min_reload_interval_s=5)
    new = rotator.rotate()

    # Just loaded: an unknown kid does not trigger a re-read yet (kid flooding).
    assert replica.find(new.kid) is None
    clock.advance(5)
    assert replica.find(new.kid) is not None
    assert replica.current.kid == new.kid


def test_a_replica_rereads_the_store_periodically_for_its_signing_key(
    key_store: FileKeyStore, clock: ManualClock
) -> None:
    rotator = KeyRing.open(key_store, clock=clock)
    replica = KeyRing.open(key_store, clock=clock, reload_interval_s=60)
    old = replica.current
    new = rotator.rotate()
    clock.advance(59)
    assert replica.current.kid == old.kid
    clock.advance(1)
    assert replica.current.kid == new.kid


def test_a_damaged_key_file_is_a_config_error_naming_the_file(
    key_store: FileKeyStore, clock: ManualClock
) -> None:
    key_store.path.parent.mkdir(parents=True)
    key_store.path.write_text("{not json")
    with pytest.raises(ConfigError) as caught:
        KeyRing.open(key_store, clock=clock)
    assert caught.value.details["path"] == str(key_store.path)


def test_damage_found_by_a_background_reload_keeps_the_keys_in_memory(
    keyring: KeyRing, key_store: FileKeyStore, clock: ManualClock
) -> None:
    current = keyring.current
    key_store.path.write_text("{not json")
    clock.advance(3600)
    assert keyring.current.kid == current.kid
    assert keyring.find("unknown") is None


def test_a_key_file_readable_by_others_is_warned_about(
    keyring: KeyRing, key_store: FileKeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    key_store.path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="objectos.security.keys"):
        key_store.load()
    assert "chmod 600" in caplog.text


@pytest.mark.parametrize(("alg", "kty"), [("ES256", "EC"), ("RS256", "RSA")])
def test_other_algorithms_can_be_chosen(
    key_store: FileKeyStore, clock: ManualClock, alg: str, kty: str
) -> None:
    ring = KeyRing.open(key_store, clock=clock, algorithm=alg)
    assert ring.current.alg == alg
    assert ring.public_jwks()["keys"][0]["kty"] == kty
    reopened = KeyRing.open(key_store, clock=clock, algorithm=alg)
    assert reopened.current.kid == ring.current.kid


def test_unsupported_algorithms_are_refused(key_store: FileKeyStore) -> None:
    with pytest.raises(ConfigError):
        KeyRing.open(key_store, algorithm="HS256")
    with pytest.raises(ConfigError):
        generate_signing_key("none", now=0)


def _pem(private_key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_configured_keys_first_signs_others_only_verify(clock: ManualClock) -> None:
    signer_pem = _pem(ed25519.Ed25519PrivateKey.generate())
    old = generate_signing_key("ES256", now=0)
    old_public_jwk = old.public_jwk()

    ring = KeyRing.from_config([signer_pem, old_public_jwk], clock=clock)

    signer = import_signing_key(signer_pem)
    assert ring.current.kid == signer.kid == signer.jwk.thumbprint()
    assert ring.current.alg == "EdDSA"
    verify_only = ring.find(old.kid)
    assert verify_only is not None and verify_only.alg == "ES256"
    assert not verify_only.is_private
    with pytest.raises(ConfigError, match="configuration"):
        ring.rotate()


def test_a_configured_public_key_cannot_be_the_signer(clock: ManualClock) -> None:
    public_only = generate_signing_key(now=0).public_jwk()
    with pytest.raises(ConfigError, match="no key can sign"):
        KeyRing.from_config([public_only], clock=clock)


def test_a_key_that_does_not_fit_its_algorithm_is_refused() -> None:
    ed_pem = _pem(ed25519.Ed25519PrivateKey.generate())
    p384_pem = _pem(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigError):
        import_signing_key(ed_pem, alg="ES256")
    with pytest.raises(ConfigError):
        import_signing_key(p384_pem)  # P-384 would be ES384, which the hub does not sign with
    with pytest.raises(ConfigError):
        import_signing_key("-----BEGIN NOTHING-----")
