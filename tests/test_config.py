"""Configuration: defaults, file, environment and flags, and errors that name key, value and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.__main__ import flag_overrides, parse_args
from appliance.config import AppConfig, ConfigError, load_config


def test_defaults_are_the_documented_ones() -> None:
    config = load_config(None, environ={})
    assert config.camera.backend == "auto"
    assert config.server.port == 8000
    assert config.motion.background_weight == 0.05
    assert config.motion.threshold == 20 and config.motion.sensitivity == "medium"
    assert config.motion.warmup_frames == 10
    assert config.motion.fps == 5.0


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("camera:\n  fps: 10\n  size: 640x480\nserver:\n  port: 9000\n")
    env = {"APPLIANCE_CAMERA__FPS": "12", "APPLIANCE_MOTION__ENABLED": "false"}
    config = load_config(path, environ=env, overrides=flag_overrides(parse_args(["--port", "9100"])))
    assert config.camera.size == (640, 480)
    assert config.camera.fps == 12
    assert config.motion.enabled is False
    assert config.server.port == 9100


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("camera:\n  fsp: 10\n", "camera.fsp: unknown key"),
        ("camera:\n  fps: -3\n", "camera.fps = -3: Input should be greater than 0"),
        ("camera:\n  size: big\n", "camera.size = 'big'"),
        ("motion:\n  blur: 20\n", "motion.blur = 20"),
        ("server:\n  port: 70000\n", "server.port = 70000"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("camera: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_key_value_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert expected in str(info.value)


def test_bad_environment_value_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stream.max_viewers = 'many'"):
        load_config(None, environ={"APPLIANCE_STREAM__MAX_VIEWERS": "many"})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_state_dir_prefers_systemd_state_directory() -> None:
    config = AppConfig()
    assert config.resolved_state_dir({"STATE_DIRECTORY": "/var/lib/appliance"}) == Path("/var/lib/appliance")
    assert config.resolved_state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/appliance")


def test_check_config_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("camera:\n  backend: synthetic\n")
    ok = subprocess.run([sys.executable, "-m", "appliance", "--config", str(good), "--check-config"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "configuration is valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera:\n  fps: zero\n")
    failed = subprocess.run([sys.executable, "-m", "appliance", "--config", str(bad), "--check-config"],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2
    assert "camera.fps = 'zero'" in failed.stderr
