"""A real Home Assistant shows "Person detected" turning on while people walk in vtest.avi, and off.

Home Assistant runs as its own process (the cached virtualenv of the other Home Assistant tests, plus
its MQTT integration's requirement), set up through its own MQTT config flow against a real
mosquitto on loopback. The appliance runs in-process with object detection on, playing Debian's
opencv-doc footage as its camera; its discovery makes the binary sensor, its counts drive it.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Broker
from tests.helpers import FOOTAGE
from tests.test_detection import footage
from tests.test_ha_discovery import ha_python  # noqa: F401  (a fixture)
from tests.test_home_assistant_rtsp import ha_with_stream, home_assistant  # noqa: F401  (fixtures)
from tests.test_mqtt import broker, broker_dir  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.deploy, pytest.mark.broker, pytest.mark.detection]
DRIVER = Path(__file__).with_name("ha_mqtt_objects.py")


@pytest.fixture(scope="module")
def ha_with_mqtt(ha_with_stream: str) -> str:  # noqa: F811
    """Home Assistant's venv with its MQTT integration's requirement (paho-mqtt, as its manifest names it)."""
    components = Path(subprocess.run([ha_with_stream, "-c", "import homeassistant.components as c; "
                                      "print(c.__path__[0])"], capture_output=True, text=True, check=True)
                      .stdout.strip())
    wanted = json.loads((components / "mqtt" / "manifest.json").read_text())["requirements"]
    subprocess.run([ha_with_stream, "-m", "pip", "install", "-q", *wanted], check=True, timeout=900,
                   capture_output=True)
    return ha_with_stream


class Driver:
    """The driver inside Home Assistant's venv, its JSON lines read as they come."""

    def __init__(self, python: str, given: dict[str, Any]) -> None:
        self.process = subprocess.Popen([python, str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(given))
        self.process.stdin.close()
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("Home Assistant said nothing in time: " +
                                 (self.process.stderr.read() if self.process.poll() is not None and
                                  self.process.stderr else "(still running)")) from None

    def until_state(self, state: str, timeout: float) -> dict[str, Any]:
        while True:
            line = self.next(timeout)
            if line.get("state") == state:
                return line

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def driver_factory(ha_with_mqtt: str) -> Iterator[Any]:
    drivers: list[Driver] = []

    def make(given: dict[str, Any]) -> Driver:
        drivers.append(Driver(ha_with_mqtt, given))
        return drivers[-1]

    yield make
    for driver in drivers:
        driver.stop()


@pytest.mark.timeout(1500)
def test_home_assistant_shows_person_detected_on_and_off(home_assistant: str, broker: Broker,  # noqa: F811
                                                         start_appliance: Any, driver_factory: Any) -> None:
    app = start_appliance(mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "porch", "reconnect_min": 1,
                                "reconnect_max": 2}, **footage(FOOTAGE / "vtest.avi"))
    assert app.mqtt is not None and app.mqtt.wait_connected(10)
    driver = driver_factory({"ha": home_assistant, "broker_port": broker.port, "unique_id": "porch_person_detected"})
    assert driver.next(120) == {"flow": "create_entry", "errors": None}
    entity = driver.next(120)["entity"]
    assert entity.startswith("binary_sensor.") and entity.endswith("person_detected")
    assert driver.until_state("off", 60)["name"].endswith("Person detected")  # the camera is off: nobody
    app.controller.on()
    driver.until_state("on", 120)  # people walk in the footage
    app.controller.off()  # the camera off: nobody is seen any more
    driver.until_state("off", 60)
