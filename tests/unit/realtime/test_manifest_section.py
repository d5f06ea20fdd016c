"""The hub manifest's ``realtime`` section: typed, strict, and what the gateways get from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.gateway import GatewaySettings
from actors.room import RoomSettings
from deployments.realtime import realtime_enabled, realtime_settings
from objectos.errors import ConfigError, ManifestError
from objectos.kernel.loader import load_hub
from objectos.protocol.loading import load_model
from objectos.protocol.manifest import HubManifest, RealtimeRooms, RealtimeSettings

ROOT = Path(__file__).resolve().parents[3]


def manifest(tmp_path: Path, realtime: str) -> Path:
    path = tmp_path / "objectos.yaml"
    path.write_text(f"id: com.test.hub\ndataDir: data\nrealtime:\n{realtime}")
    return path


def test_unknown_key_is_refused_with_file_line_and_key(tmp_path: Path) -> None:
    path = manifest(tmp_path, "  port: 9001\n  advertiseURL: http://x\n")
    with pytest.raises(ManifestError) as caught:
        load_model(path, HubManifest)
    assert [fe.field for fe in caught.value.field_errors] == [f"{path}:5 realtime.advertiseURL"]
    assert caught.value.field_errors[0].message == "unknown key"


def test_unknown_room_key_and_bad_values_name_their_keys(tmp_path: Path) -> None:
    path = manifest(
        tmp_path,
        "  port: 70000\n  auth: oidc\n  rooms:\n    maxRooms: 0\n    idleTimeout: 5\n",
    )
    with pytest.raises(ManifestError) as caught:
        load_model(path, HubManifest)
    fields = {fe.field: fe.message for fe in caught.value.field_errors}
    assert set(fields) == {
        f"{path}:4 realtime.port",
        f"{path}:5 realtime.auth",
        f"{path}:7 realtime.rooms.maxRooms",
        f"{path}:8 realtime.rooms.idleTimeout",
    }
    assert "65535" in fields[f"{path}:4 realtime.port"]
    assert "'hub' or 'dev'" in fields[f"{path}:5 realtime.auth"]
    assert fields[f"{path}:8 realtime.rooms.idleTimeout"] == "unknown key"


def test_advertise_url_must_be_http(tmp_path: Path) -> None:
    path = manifest(tmp_path, "  advertiseUrl: ws//gateway\n")
    with pytest.raises(ManifestError) as caught:
        load_model(path, HubManifest)
    assert caught.value.field_errors[0].field == f"{path}:4 realtime.advertiseUrl"


def test_a_dumped_manifest_with_a_bad_section_names_the_key() -> None:
    hub = {"database": {"url": "sqlite+aiosqlite:///x.db"}, "realtime": {"rooms": {"maxRoom": 3}}}
    with pytest.raises(ConfigError) as caught:
        realtime_settings(hub)
    assert caught.value.details["key"] == "realtime.rooms.maxRoom"
    assert caught.value.field_errors[0].field == "realtime.rooms.maxRoom"
    assert caught.value.message == "invalid realtime settings: realtime.rooms.maxRoom: unknown key"


def test_defaults_match_the_gateway_and_room_settings() -> None:
    """The manifest documents the gateways' defaults; they must not drift apart."""
    section, rooms = RealtimeSettings(), RealtimeRooms()
    gateway_defaults = GatewaySettings.model_fields
    room_defaults = RoomSettings.model_fields
    assert section.host == gateway_defaults["host"].default
    assert section.port == gateway_defaults["port"].default
    assert section.corsAllowedOrigins == gateway_defaults["cors_allowed_origins"].default
    assert section.maxPayloadBytes == gateway_defaults["max_payload_bytes"].default
    assert section.wsCompression == gateway_defaults["ws_compression"].default
    assert section.pingIntervalS == gateway_defaults["ping_interval_s"].default
    assert section.pingTimeoutS == gateway_defaults["ping_timeout_s"].default
    assert section.niceness == gateway_defaults["niceness"].default
    assert section.auth == gateway_defaults["auth"].default
    assert rooms.maxRooms == room_defaults["max_rooms"].default
    assert rooms.idleTimeoutS == room_defaults["idle_timeout_s"].default
    assert rooms.compactEvery == room_defaults["compact_every"].default
    assert rooms.sweepIntervalS == room_defaults["sweep_interval_s"].default
    assert rooms.awarenessTimeoutS == room_defaults["awareness_timeout_s"].default
    assert rooms.activationTimeoutS == room_defaults["activation_timeout_s"].default
    assert rooms.gatewayTimeoutS == room_defaults["gateway_timeout_s"].default
    assert rooms.niceness == room_defaults["niceness"].default


def test_settings_come_from_the_typed_section(tmp_path: Path) -> None:
    path = manifest(
        tmp_path,
        "  host: 0.0.0.0\n  port: 9100\n  advertiseUrl: https://rt.example.com/\n"
        "  corsAllowedOrigins: [https://app.example.com]\n  pingIntervalS: 10\n"
        "  rooms: {maxRooms: 7, idleTimeoutS: 2.5}\n",
    )
    hub = load_hub(path)
    for given in (hub, hub.model_dump()):  # a HubManifest, or what Ray ships to actors
        settings = realtime_settings(given)
        assert (settings.host, settings.port) == ("0.0.0.0", 9100)
        assert settings.advertise_url == "https://rt.example.com/"
        assert settings.cors_allowed_origins == ["https://app.example.com"]
        assert settings.ping_interval_s == 10
        assert settings.auth == "hub"
        assert (settings.rooms.max_rooms, settings.rooms.idle_timeout_s) == (7, 2.5)
        assert settings.rooms.database_url == hub.database.url
        assert "{dataDir}" not in settings.rooms.database_url


def test_overrides_and_port_zero(tmp_path: Path) -> None:
    hub = load_hub(manifest(tmp_path, "  port: 0\n"))
    settings = realtime_settings(hub, rooms={"max_rooms": 3})
    assert settings.port != 0 and settings.rooms.max_rooms == 3
    assert realtime_settings(hub, port=9200).port == 9200


def test_dev_mode_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBJECTOS_REALTIME_TOKEN", raising=False)
    hub = load_hub(manifest(tmp_path, "  auth: dev\n"))
    token = realtime_settings(hub).dev_token
    assert token and (Path(hub.dataDir) / "realtime.token").read_text().strip() == token
    assert realtime_settings(hub).dev_token == token  # kept across starts
    explicit = load_hub(manifest(tmp_path, "  auth: dev\n  devToken: s3cret\n"))
    assert realtime_settings(explicit).dev_token == "s3cret"


def test_realtime_can_be_disabled(tmp_path: Path) -> None:
    assert realtime_enabled(load_hub(manifest(tmp_path, "  enabled: false\n"))) is False
    assert realtime_enabled({"id": "com.test.hub"}) is True  # on unless turned off


def test_sample_hub_has_a_realtime_section() -> None:
    hub = load_hub(ROOT / "configs" / "objectos.yaml")
    assert hub.realtime.enabled and hub.realtime.auth == "hub"
    assert realtime_settings(hub).port == hub.realtime.port
