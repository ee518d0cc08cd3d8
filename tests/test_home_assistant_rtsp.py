"""A real Home Assistant adds the appliance as a Generic Camera with its RTSP stream, and its stream
integration makes HLS with H.264 from it: what the dashboards and the phone app then play.

Home Assistant runs as its own process from the cached virtualenv the discovery test uses (plus the
Generic Camera's and Stream's requirements, installed once), on loopback; the appliance runs
in-process with RTSP and the login on. ``tests/ha_generic_camera.py`` drives Home Assistant's REST
and websocket APIs from inside its venv.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.passwords import hash_password
from tests.broker import free_port
from tests.test_ha_discovery import ha_python  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.deploy, pytest.mark.rtsp]

DRIVER = Path(__file__).with_name("ha_generic_camera.py")
USER, PASSWORD = "admin", "garden wall"
CONFIG = """\
homeassistant:
  name: Test
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
websocket_api:
stream:
logger:
  default: warning
  logs:
    homeassistant.components.http: info
"""


@pytest.fixture(scope="module")
def ha_with_stream(ha_python: str) -> str:  # noqa: F811
    """Home Assistant's venv with what the Generic Camera and Stream integrations need, and the
    frontend, without which Home Assistant starts in recovery mode (their manifests name the
    versions), so Home Assistant runs with --skip-pip."""
    venv = Path(ha_python).parent.parent
    marker = venv / "stream-requirements"
    components = Path(subprocess.run([ha_python, "-c", "import homeassistant.components as c; print(c.__path__[0])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    wanted = "\n".join(sorted({requirement for name in ("generic", "stream", "image_upload", "frontend")
                               for requirement in json.loads((components / name / "manifest.json").read_text())
                               .get("requirements", [])}))
    if not marker.exists() or marker.read_text() != wanted:
        subprocess.run([ha_python, "-m", "pip", "install", "-q", *wanted.split()], check=True, timeout=900,
                       capture_output=True)
        marker.write_text(wanted)
    return ha_python


@pytest.fixture
def home_assistant(ha_with_stream: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "ha"
    config.mkdir()
    (config / "configuration.yaml").write_text(CONFIG.format(port=port))
    log = tmp_path / "ha.log"
    process = subprocess.Popen([ha_with_stream, "-m", "homeassistant", "-c", str(config), "--skip-pip"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listening = threading.Event()

    def drain() -> None:
        """Keep its log flowing (a full pipe would stall it) and notice when its web server is up."""
        assert process.stdout is not None
        with log.open("w") as out:
            for line in process.stdout:
                out.write(line)
                out.flush()
                if "Now listening on port" in line:
                    listening.set()
        listening.set()  # it exited: stop waiting

    reader = threading.Thread(target=drain, name="ha-log", daemon=True)
    reader.start()
    try:
        assert listening.wait(600) and process.poll() is None, "Home Assistant did not start:\n" + \
            log.read_text()[-4000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        reader.join(10)


@pytest.mark.timeout(1500)
def test_home_assistant_adds_the_rtsp_stream_as_a_generic_camera_and_makes_hls(
        home_assistant: str, start_appliance: Any, ha_with_stream: str, tmp_path: Path) -> None:
    app = start_appliance(rtsp={"enabled": True, "port": 0, "size": "640x360", "fps": 10},
                          camera={"size": "640x360", "fps": 10},
                          server={"auth": {"username": USER, "password_hash": hash_password(PASSWORD)}})
    app.controller.on()
    assert app.rtsp is not None
    segment = tmp_path / "segment.mp4"
    given = {"ha": home_assistant, "still": f"{app.url}/snapshot.jpg",
             "stream": f"rtsp://127.0.0.1:{app.rtsp.server.port}/live", "username": USER, "password": PASSWORD,
             "out": str(segment)}
    result = subprocess.run([ha_with_stream, str(DRIVER)], input=json.dumps(given), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["second_step"] == "user_confirm", report  # Home Assistant opened the stream and made HLS
    assert report["result"] == "create_entry" and report["cameras"], report
    assert "#EXTM3U" in report["master"]
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json", str(segment)],
        capture_output=True, text=True, check=True).stdout)
    assert probe["streams"][0] == {"codec_name": "h264", "width": 640, "height": 360}
