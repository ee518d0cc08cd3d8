"""Our discovery payloads pass Home Assistant's own validation (an entity HA rejects is a defect).

Home Assistant is installed into a separate, cached virtualenv with the newest Python this machine
has (it does not run on 3.11 any more); pip picks the newest Home Assistant that Python supports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.camera_backends.pi_camera import PI_CONTROLS
from appliance.mqtt.discovery import camera_attributes, device_block, discovery_configs
from appliance.mqtt.topics import Topics
from appliance.state import CameraState
from tests.debian_root import CACHE

pytestmark = [pytest.mark.deploy]

VALIDATOR = Path(__file__).with_name("ha_validate.py")
PYENV = Path.home() / ".pyenv" / "versions"


def newest_python() -> str:
    """The newest Python 3.12+ that runs here (pyenv's shims exist even for versions they won't run)."""
    candidates: list[str | None] = [str(p) for p in sorted(PYENV.glob("3.1[234].*/bin/python3"),
                                                           key=lambda p: [int(n) for n in p.parts[-3].split(".")],
                                                           reverse=True)]
    candidates += [shutil.which(f"python3.{minor}") for minor in (14, 13, 12)]
    candidates.append(shutil.which("python3"))
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    raise AssertionError("no Python interpreter found")


@pytest.fixture(scope="module")
def ha_python() -> str:
    venv = CACHE / "ha-venv"
    python = venv / "bin" / "python"
    if not (venv / "installed").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([newest_python(), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "homeassistant"], check=True, timeout=1500,
                       capture_output=True)
        (venv / "installed").touch()
    return str(python)


def validate(ha_python: str, configs: dict[str, dict[str, object]]) -> dict[str, str | None]:
    result = subprocess.run([ha_python, str(VALIDATOR)], input=json.dumps(configs), capture_output=True,
                            text=True, timeout=300, check=True)
    return json.loads(result.stdout)


@pytest.mark.timeout(1800)
def test_home_assistant_accepts_every_discovered_entity(ha_python: str) -> None:
    topics = Topics("garden", "appliance/garden", "homeassistant")
    # Every picture control a camera may offer becomes a number or a select: the Pi camera's, which
    # has them all, with the widest ranges (exposure time in a box, not a slider).
    picture = {name: control.public() for name, control in PI_CONTROLS.items()}
    configs = discovery_configs(topics, device_block(topics, "Garden", "Pi camera 0", "http://192.168.1.5:8000/"),
                                picture, recording=True, objects=("person", "car", "traffic light"), notify=True)
    assert {f"homeassistant/{entity}/config" for entity in ("number/garden/exposure_time", "select/garden/night_mode",
                                                            "select/garden/white_balance", "binary_sensor/garden/night",
                                                            "binary_sensor/garden/recording_problem",
                                                            "binary_sensor/garden/person_detected",
                                                            "sensor/garden/traffic_light_count",
                                                            "switch/garden/armed", "sensor/garden/last_notification")
            } <= set(configs)
    # Two broken payloads prove the validator really rejects what Home Assistant would.
    switch = configs["homeassistant/switch/garden/camera/config"]
    enum_sensor = configs["homeassistant/sensor/garden/camera_state/config"]
    broken = {
        "homeassistant/switch/broken/no_command/config": {k: v for k, v in switch.items() if k != "command_topic"},
        "homeassistant/sensor/broken/enum_unit/config": {**enum_sensor, "unit_of_measurement": "fps"},
    }
    results = validate(ha_python, {**configs, **broken})
    assert {topic: results[topic] for topic in configs} == dict.fromkeys(configs)
    assert all(results[topic] for topic in broken), results
    # Attribute names Home Assistant reserves are dropped silently: ours must not be among them.
    blocked = set(results["__attributes_blocked__"])
    assert "state" in blocked  # the list is real
    assert not set(camera_attributes(CameraState.ERROR, "unplugged")) & blocked
