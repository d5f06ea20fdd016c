"""`objectos up` refuses bad input before anything starts (no Ray here at all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.cli import EXIT_BAD_INPUT, main

CYCLE = "tests.unit.cli.cycle_plugins"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "objectos.yaml"
    path.write_text(text)
    return path


def up(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["up", "--config", str(config)])
    return code, capsys.readouterr().err


def nothing_started(config: Path) -> bool:
    # `up` records the Ray it starts in <dataDir>/hub.json; no file, no Ray.
    return not (config.parent / ".objectos" / "hub.json").exists()


def test_unknown_key_names_file_line_and_key(tmp_path: Path, capsys) -> None:
    config = write(tmp_path, "id: com.test.hub\ndataDir: .objectos\nplugins: {}\nkernal: {}\n")
    code, err = up(config, capsys)
    assert code == EXIT_BAD_INPUT
    assert f"{config}:4 kernal: unknown key" in err
    assert nothing_started(config)


def test_invalid_yaml_names_the_line(tmp_path: Path, capsys) -> None:
    config = write(tmp_path, "id: com.test.hub\nplugins: [unclosed\n")
    code, err = up(config, capsys)
    assert code == EXIT_BAD_INPUT
    assert "invalid YAML" in err and str(config) in err


def test_unknown_plugin_module_is_named(tmp_path: Path, capsys) -> None:
    config = write(
        tmp_path,
        "id: com.test.hub\nplugins:\n  com.test.nope:\n    module: no.such.module:Plugin\n",
    )
    code, err = up(config, capsys)
    assert code == EXIT_BAD_INPUT
    assert "plugins.com.test.nope.module" in err and "no.such.module" in err
    assert nothing_started(config)


def test_dependency_cycle_shows_its_path(tmp_path: Path, capsys) -> None:
    config = write(
        tmp_path,
        "id: com.test.hub\nplugins:\n"
        f"  com.test.alpha: {{module: '{CYCLE}:Alpha'}}\n"
        f"  com.test.beta: {{module: '{CYCLE}:Beta'}}\n",
    )
    code, err = up(config, capsys)
    assert code == EXIT_BAD_INPUT
    assert "com.test.alpha -> com.test.beta -> com.test.alpha" in err
    assert nothing_started(config)


def test_incompatible_dependency_version_is_named(tmp_path: Path, capsys) -> None:
    config = write(
        tmp_path,
        "id: com.test.hub\nplugins:\n"
        f"  com.test.alpha: {{module: '{CYCLE}:Alpha'}}\n"
        f"  com.test.gamma: {{module: '{CYCLE}:NeedsNewerAlpha'}}\n",
    )
    code, err = up(config, capsys)
    assert code == EXIT_BAD_INPUT
    assert "com.test.alpha" in err and "^2.0.0" in err


def test_id_mismatch_and_bad_plugin_config_are_reported_together(tmp_path: Path, capsys) -> None:
    config = write(
        tmp_path,
        "id: com.test.hub\nplugins:\n"
        "  com.test.wrong-id: {module: 'objectos.plugins.storage:StoragePlugin'}\n"
        "  com.example.hello:\n"
        "    module: objectos.plugins.example:HelloPlugin\n"
        "    config: {greeting: 42}\n",
    )
    code, err = up(config, capsys)
    assert code == EXIT_BAD_INPUT
    assert "declares id 'com.objectos.storage'" in err
    assert "plugins.com.example.hello.config" in err and "greeting" in err


def test_a_busy_realtime_port_is_refused_before_anything_starts(tmp_path: Path, capsys) -> None:
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        http_port = free.getsockname()[1]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        config = write(
            tmp_path,
            f"id: com.test.hub\nplugins: {{}}\nserve: {{port: {http_port}}}\n"
            f"realtime: {{host: 127.0.0.1, port: {taken}}}\n",
        )
        code, err = up(config, capsys)
    assert code == EXIT_BAD_INPUT
    assert f"realtime.port 127.0.0.1:{taken} is already in use" in err
    assert nothing_started(config)


def test_a_bad_realtime_key_names_file_line_and_key(tmp_path: Path, capsys) -> None:
    config = write(tmp_path, "id: com.test.hub\nplugins: {}\nrealtime:\n  prot: 9000\n")
    code, err = up(config, capsys)
    assert code == EXIT_BAD_INPUT
    assert f"{config}:4 realtime.prot: unknown key" in err
    assert nothing_started(config)
