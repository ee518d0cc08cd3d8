"""A real Home Assistant adds the appliance through its own ONVIF integration, as a store-bought
camera: the config flow with the login, the camera entity streaming (Home Assistant's ``stream``
makes HLS with H.264 from the RTSP address ONVIF gave it), the snapshot, and a motion binary sensor
that follows the appliance's motion events by PullPoint.

Home Assistant runs from the cached virtualenv the other Home Assistant tests use, plus the ONVIF
integration's own requirements from its manifest (``onvif-zeep-async``, ``WSDiscovery``) and the
``ffmpeg`` integration's it depends on, installed once; ``tests/ha_onvif.py`` drives it from inside.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.test_ha_discovery import ha_python  # noqa: F401  (a fixture)
from tests.test_home_assistant_rtsp import ha_with_stream, home_assistant  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.deploy, pytest.mark.rtsp]

DRIVER = Path(__file__).with_name("ha_onvif.py")
USER, PASSWORD = "admin", "garden wall"


@pytest.fixture(scope="module")
def ha_with_onvif(ha_with_stream: str) -> str:  # noqa: F811
    """The ONVIF integration's requirements (and those of ``ffmpeg``, which it depends on), as its
    manifest names them, in Home Assistant's venv: it runs with --skip-pip."""
    venv = Path(ha_with_stream).parent.parent
    marker = venv / "onvif-requirements"
    components = Path(subprocess.run([ha_with_stream, "-c", "import homeassistant.components as c; "
                                      "print(c.__path__[0])"], capture_output=True, text=True, check=True)
                      .stdout.strip())
    wanted = "\n".join(sorted({requirement for name in ("onvif", "ffmpeg")
                               for requirement in json.loads((components / name / "manifest.json").read_text())
                               .get("requirements", [])}))
    if not marker.exists() or marker.read_text() != wanted:
        subprocess.run([ha_with_stream, "-m", "pip", "install", "-q", *wanted.split()], check=True, timeout=900,
                       capture_output=True)
        marker.write_text(wanted)
    return ha_with_stream


@pytest.mark.timeout(1500)
def test_home_assistant_adds_the_camera_by_onvif_streams_it_and_follows_its_motion(
        ha_with_onvif: str, home_assistant: str, start_appliance: Any, tmp_path: Path) -> None:  # noqa: F811
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    app = start_appliance(rtsp={"enabled": True, "port": 0, "size": "640x360", "fps": 10},
                          camera={"size": "640x360", "fps": 10,
                                  "synthetic": {"objects": 2, "motion_period": 6, "motion_duration": 2}},
                          motion={"warmup_frames": 5, "event_gap": 1.0}, onvif={"enabled": True},
                          server={"auth": {"username": USER, "password_file": str(secret)}})
    assert app.onvif is not None and app.rtsp is not None
    app.controller.on()
    segment = tmp_path / "segment.mp4"
    given = {"ha": home_assistant, "host": "127.0.0.1", "port": app.server.port, "username": USER,
             "password": PASSWORD, "out": str(segment)}
    driver = subprocess.Popen([ha_with_onvif, str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert driver.stdout is not None
        for line in driver.stdout:
            lines.put(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert driver.stdin is not None
    driver.stdin.write(json.dumps(given))
    driver.stdin.close()

    def next_line(timeout: float = 240) -> dict[str, Any]:
        try:
            return lines.get(timeout=timeout)
        except queue.Empty:
            driver.kill()
            raise AssertionError("the driver said nothing in time: " + (driver.stderr.read()[-3000:]
                                                                       if driver.stderr else "")) from None

    try:
        flow = next_line()
        assert flow["flow"] == "create_entry", flow
        entities = next_line()["entities"]
        assert any(entity.startswith("camera.") for entity in entities), entities
        snapshot = next_line()
        assert snapshot["snapshot_status"] == 200 and snapshot["snapshot_start"] == "ffd8ff", snapshot
        assert next_line() == {"hls": True}
        probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
                                           "-of", "json", str(segment)], capture_output=True, text=True,
                                          check=True).stdout)
        assert probe["streams"][0] == {"codec_name": "h264", "width": 640, "height": 360}
        # The motion sensor follows the appliance's events: on, then off.
        seen: list[str] = []
        while not ("on" in seen and "off" in seen[seen.index("on"):]):
            message = next_line(60)
            if "motion" in message:
                seen.append(message["motion"])
        assert app.onvif.events.subscriptions >= 1
    finally:
        driver.kill()
        driver.wait(10)
