"""Faults a camera in a garden has, against the real server: broken and hanging drivers, a network
camera that stops sending, no camera at all, listeners that call back, and shutdown under all that."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from appliance.camera_backends.opencv import OpenCVCamera
from appliance.camera_backends.pi_camera import PiCamera
from appliance.runtime import Appliance
from appliance.state import CameraState, StateChange
from tests.broker import Broker, free_port
from tests.helpers import FaultyCamera, MjpegSource, capture_threads, make_config

Start = Callable[..., Appliance]
ROOT = Path(__file__).resolve().parent.parent


def switch(app: Appliance, on: bool, timeout: float = 20) -> requests.Response:
    return requests.put(f"{app.url}/api/camera", json={"on": on}, timeout=timeout)


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[FaultyCamera]:
    camera = FaultyCamera(make_config(tmp_path).camera)
    yield camera
    camera.release.set()  # let any hung call return so its thread ends


def test_any_exception_in_open_or_close_is_an_error_and_then_recovers(start_appliance: Start,
                                                                      faulty: FaultyCamera) -> None:
    app = start_appliance(backend=faulty)
    faulty.raise_in_open = RuntimeError("driver exploded")
    refused = switch(app, True)
    assert refused.status_code == 503, refused.text
    body = refused.json()
    assert body["state"] == "error" and body["on"] is True and "RuntimeError: driver exploded" in body["reason"]
    assert requests.get(app.url + "/healthz", timeout=5).status_code == 200  # alive and retrying
    faulty.raise_in_open = None
    assert app.controller.wait_for(lambda s: s == CameraState.ON, 5)
    faulty.raise_in_close = OSError("close failed")
    faulty.gone.set()  # unplugged: read fails, close raises, open fails
    assert app.controller.wait_for(lambda s: s == CameraState.ERROR, 5)
    faulty.gone.clear()
    assert app.controller.wait_for(lambda s: s == CameraState.ON, 5)
    assert capture_threads() == 1 and faulty.most_inside == 1


def test_garbage_frames_are_an_error_not_a_crash(start_appliance: Start, faulty: FaultyCamera) -> None:
    app = start_appliance(backend=faulty)
    assert switch(app, True).status_code == 200
    faulty.garbage = True
    assert app.controller.wait_for(lambda s: s == CameraState.ERROR, 5)
    assert "malformed frame" in (app.controller.status()["error"] or "")
    faulty.garbage = False
    assert app.controller.wait_for(lambda s: s == CameraState.ON, 5)


def test_a_hanging_open_is_unhealthy_off_wins_and_there_is_never_a_second_thread(start_appliance: Start,
                                                                                 faulty: FaultyCamera) -> None:
    app = start_appliance(backend=faulty, camera={"open_timeout": 0.3, "read_timeout": 0.3})
    faulty.hang_open.set()
    started = time.monotonic()
    late = switch(app, True)
    assert late.status_code == 504 and late.json()["state"] == "error", late.text
    assert time.monotonic() - started < 0.6 + 1.0  # open_timeout + read_timeout, and a little
    health = requests.get(app.url + "/healthz", timeout=5)
    assert health.status_code == 503 and "opening the camera has hung" in health.json()["error"]
    started = time.monotonic()
    assert switch(app, False).json()["state"] == "off"
    assert time.monotonic() - started < 1.5  # off wins at once, whatever the driver does
    assert requests.get(app.url + "/healthz", timeout=5).status_code == 200  # off: nothing should run
    waiting = switch(app, True)  # the hung thread still holds the camera: no second thread starts
    assert waiting.status_code in (503, 504) and "still held by the previous capture" in waiting.json()["reason"]
    assert capture_threads() == 1
    faulty.hang_open.clear()
    faulty.release.set()  # the driver returns: the old thread closes, hands over, and frames flow
    assert app.controller.wait_for(lambda s: s == CameraState.ON, 5)
    assert capture_threads() == 1 and faulty.most_inside == 1
    assert faulty.opens - faulty.closes == 1  # every open but the current one was closed


def test_a_network_camera_that_stops_sending_is_an_error_then_comes_back(start_appliance: Start) -> None:
    source = MjpegSource()
    try:
        app = start_appliance(camera={"backend": "opencv", "device": source.url, "read_timeout": 0.5,
                                      "open_timeout": 3.0})
        assert isinstance(app.backend, OpenCVCamera)
        assert switch(app, True).json()["state"] == "on"
        source.stall()
        stalled = time.monotonic()
        assert app.controller.wait_for(lambda s: s == CameraState.ERROR, 5)
        assert time.monotonic() - stalled <= 0.5 + 1.0  # read_timeout + 1 s
        source.resume()
        assert app.controller.wait_for(lambda s: s == CameraState.ON, 10)
    finally:
        source.close()


def test_auto_without_a_camera_is_an_error_not_the_demo(start_appliance: Start,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PiCamera, "detect", staticmethod(lambda settings: False))
    monkeypatch.setattr(OpenCVCamera, "detect", staticmethod(lambda settings: False))
    app = start_appliance(camera={"backend": "auto"})
    assert app.backend_name == "none"
    refused = switch(app, True)
    assert refused.status_code == 503 and "no camera found" in refused.json()["reason"]
    camera = requests.get(app.url + "/api/camera", timeout=5).json()
    assert camera["state"] == "error" and camera["backend"] == "none" and "no camera found" in camera["error"]
    page = requests.get(app.url + "/", timeout=5).text
    assert "demo-banner" not in page


def test_a_listener_that_switches_the_camera_off_does_not_deadlock(start_appliance: Start) -> None:
    app = start_appliance()
    heard: list[StateChange] = []

    def automation(change: StateChange) -> None:
        heard.append(change)
        if change.state == CameraState.ON:
            app.controller.off(source="automation")  # calls back into the controller from a listener

    app.controller.add_listener(automation)
    assert switch(app, True).status_code == 200
    assert app.controller.wait_for(lambda s: s == CameraState.OFF, 5)
    assert app.controller.flush(5)
    assert [c.state.value for c in heard][-2:] == ["stopping", "off"]
    assert not app.controller.wanted_on


def test_restore_happens_before_any_command_source_opens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text('{"on": true}')
    caplog.set_level(logging.INFO)
    with Appliance(make_config(tmp_path)) as app:
        messages = [record.getMessage() for record in caplog.records]
        restored = next(i for i, m in enumerate(messages) if m.startswith("restoring camera state"))
        serving = next(i for i, m in enumerate(messages) if m.startswith("serving on"))
        assert restored < serving
        assert switch(app, False).json()["state"] == "off"  # the first command is the last word
        assert app.controller.flush(5) and not app.controller.wanted_on


@pytest.mark.broker
def test_sigterm_within_5_seconds_with_a_hung_camera_and_an_mqtt_command_in_flight(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="mosquitto-test-"))
    broker = Broker(folder, extra="allow_anonymous true")
    broker.start()
    port = free_port()
    code = ("import faulthandler, signal, sys; faulthandler.register(signal.SIGQUIT); "
            "sys.path.insert(0, sys.argv.pop(1)); from tests.helpers import FaultyCamera; "
            "from appliance.config import CameraSettings; from appliance.__main__ import main; "
            "camera = FaultyCamera(CameraSettings(size=(320, 240))); camera.hang_open.set(); "
            "sys.exit(main(sys.argv[1:], backend=camera))")
    env = {**os.environ, "APPLIANCE_STATE_DIR": str(tmp_path), "APPLIANCE_MQTT__HOST": "127.0.0.1",
           "APPLIANCE_MQTT__PORT": str(broker.port), "APPLIANCE_MQTT__DEVICE_ID": "cam1",
           "APPLIANCE_CAMERA__OPEN_TIMEOUT": "30"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT), "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "MQTT: connected" in line:
                break
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-t", "appliance/cam1/camera/set", "-m", "ON"],
                       check=True, timeout=10)
        for line in proc.stdout:  # the command is in flight: the camera is starting and hangs in open()
            if "camera off -> starting (mqtt)" in line:
                break
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            output = proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGQUIT)  # faulthandler prints every thread's stack
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=2)
            proc.kill()
            raise AssertionError("no exit 10 s after SIGTERM:\n" + proc.communicate()[0]) from None
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, output
        assert elapsed < 5.0, f"shutdown took {elapsed:.1f} s\n{output}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_pure_modules_do_not_import_opencv() -> None:
    code = ("import sys; import appliance.mqtt.discovery, appliance.web.live, appliance.health, appliance.panel.gpio, "
            "appliance.state, appliance.dispatch, appliance.motion.events, appliance.mqtt.commands; "
            "print('cv2' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.strip() == "False", result.stderr
