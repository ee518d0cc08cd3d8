"""MQTT and Home Assistant discovery against a real mosquitto broker on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.runtime import Appliance
from tests.broker import Broker, Recorder, make_certs
from tests.helpers import CountingCamera, FaultyCamera, decode_jpeg, make_config

pytestmark = [pytest.mark.broker]

Start = Callable[..., Appliance]
PREFIX = "appliance/cam1"


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    """A folder mosquitto's own user can read: pytest's tmp_path sits under a 0700 folder of root's."""
    folder = Path(tempfile.mkdtemp(prefix="mosquitto-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def broker(broker_dir: Path) -> Iterator[Broker]:
    broker = Broker(broker_dir, extra="allow_anonymous true")
    broker.start()
    yield broker
    broker.stop()


def mqtt_section(broker: Broker, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": broker.port, "device_id": "cam1", "reconnect_min": 1,
            "reconnect_max": 2, "stats_interval": 1, **extra}


def start_with_mqtt(start: Start, broker: Broker, mqtt: dict[str, Any] | None = None, **sections: Any) -> Appliance:
    app = start(mqtt={**mqtt_section(broker), **(mqtt or {})}, **sections)
    assert app.mqtt is not None and app.mqtt.wait_connected(10)
    return app


def test_discovery_and_retained_states_reach_a_late_subscriber(broker: Broker, start_appliance: Start) -> None:
    with Recorder(broker.port, [f"{PREFIX}/stats"]) as early:
        app = start_with_mqtt(start_appliance, broker)
        early.wait_for(f"{PREFIX}/stats")  # published last on connect: everything is at the broker
    with Recorder(broker.port, ["homeassistant/#", f"{PREFIX}/#"]) as late:
        assert late.wait_for(f"{PREFIX}/availability").payload == b"online"
        assert late.wait_for(f"{PREFIX}/camera/state").payload == b"OFF"
        assert late.wait_for(f"{PREFIX}/camera/status").payload == b"off"
        assert late.wait_for(f"{PREFIX}/camera/problem").payload == b"OFF"
        assert late.wait_for(f"{PREFIX}/motion/state").payload == b"OFF"
        stats = json.loads(late.wait_for(f"{PREFIX}/stats").payload)
        assert set(stats) >= {"fps", "viewers", "h264_viewers"} and stats["h264_viewers"] == 0
        configs = {}
        for component, object_id in [("switch", "camera"), ("binary_sensor", "motion"),
                                     ("binary_sensor", "camera_problem"), ("sensor", "camera_state"),
                                     ("camera", "snapshot"), ("button", "take_snapshot"),
                                     ("sensor", "fps"), ("sensor", "viewers"), ("sensor", "h264_viewers")]:
            message = late.wait_for(f"homeassistant/{component}/cam1/{object_id}/config")
            assert message.retain
            configs[(component, object_id)] = json.loads(message.payload)
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    devices = [c["device"] for c in configs.values()]
    assert all(d == devices[0] for d in devices)
    device = devices[0]
    assert device["identifiers"] == ["camera_appliance_cam1"]
    assert device["configuration_url"] == f"http://127.0.0.1:{app.server.port}/"
    assert {"name", "manufacturer", "model", "sw_version"} <= set(device)
    for config in configs.values():
        assert config["availability_topic"] == f"{PREFIX}/availability"
    switch = configs[("switch", "camera")]
    assert switch["command_topic"] == f"{PREFIX}/camera/set" and switch["state_topic"] == f"{PREFIX}/camera/state"
    motion = configs[("binary_sensor", "motion")]
    assert motion["device_class"] == "motion" and motion["state_topic"] == f"{PREFIX}/motion/state"
    assert configs[("camera", "snapshot")]["topic"] == f"{PREFIX}/snapshot"
    assert configs[("button", "take_snapshot")]["command_topic"] == f"{PREFIX}/snapshot/set"
    assert configs[("sensor", "camera_state")]["options"] == ["off", "starting", "on", "stopping", "error"]


def test_status_reports_the_mqtt_connection(broker: Broker, start_appliance: Start) -> None:
    app = start_with_mqtt(start_appliance, broker)
    mqtt = requests.get(app.url + "/api/status", timeout=5).json()["mqtt"]
    assert mqtt == {"connected": True, "broker": f"127.0.0.1:{broker.port}", "device_id": "cam1",
                    "topic_prefix": PREFIX}


def test_ha_birth_message_republishes_discovery(broker: Broker, start_appliance: Start) -> None:
    start_with_mqtt(start_appliance, broker)
    with Recorder(broker.port, ["homeassistant/switch/#"]) as ha:
        ha.wait_for("homeassistant/switch/cam1/camera/config")  # the retained copy
        ha.publish("homeassistant/status", "online")
        fresh = ha.wait_for("homeassistant/switch/cam1/camera/config")
        assert not fresh.retain  # delivered live: it was published again


def test_camera_set_commands_and_garbage(broker: Broker, start_appliance: Start) -> None:
    app = start_with_mqtt(start_appliance, broker)
    with Recorder(broker.port, [f"{PREFIX}/camera/status"]) as ha:
        ha.wait_for(f"{PREFIX}/camera/status", lambda p: p == b"off")  # the retained one
        ha.publish(f"{PREFIX}/camera/set", "ON")
        ha.wait_for(f"{PREFIX}/camera/status", lambda p: p == b"on")
        assert app.controller.state.value == "on"
        ha.publish(f"{PREFIX}/camera/set", "off")  # any case
        ha.wait_for(f"{PREFIX}/camera/status", lambda p: p == b"stopping")
        ha.wait_for(f"{PREFIX}/camera/status", lambda p: p == b"off")
        ha.seen.clear()
        for garbage in [b"", b"bogus", b"\xff\xfe\x00", b"ON ON", b'{"on": true}', b"1" * 5000]:
            ha.publish(f"{PREFIX}/camera/set", garbage)
        ha.publish(f"{PREFIX}/camera/set", "Toggle")  # commands run in order: garbage first
        ha.wait_for(f"{PREFIX}/camera/status", lambda p: p == b"on")
        statuses = [m.payload for m in ha.seen if m.topic == f"{PREFIX}/camera/status"]
        # The garbage changed nothing: the only transitions after OFF are the toggle's.
        assert statuses == [b"starting"]
        assert app.controller.status()["on"] is True


def test_motion_detection_switch_and_sensitivity_from_home_assistant(
        broker: Broker, start_appliance: Start, tmp_path: Path) -> None:
    app = start_with_mqtt(start_appliance, broker)
    detection, sensitivity = f"{PREFIX}/motion/detection", f"{PREFIX}/motion/sensitivity"
    with Recorder(broker.port, [detection, sensitivity, "homeassistant/#"]) as ha:
        switch = json.loads(ha.wait_for("homeassistant/switch/cam1/motion_detection/config").payload)
        select = json.loads(ha.wait_for("homeassistant/select/cam1/motion_sensitivity/config").payload)
        assert switch["command_topic"] == f"{detection}/set" and switch["state_topic"] == detection
        assert select["command_topic"] == f"{sensitivity}/set" and select["state_topic"] == sensitivity
        assert select["options"] == ["low", "medium", "high", "custom"]
        assert ha.wait_for(detection).payload == b"ON" and ha.wait_for(sensitivity).payload == b"medium"
        ha.publish(f"{detection}/set", "OFF")
        ha.wait_for(detection, lambda p: p == b"OFF")
        assert app.motion.settings.enabled is False  # what the capture thread reads at its next frame
        ha.publish(f"{sensitivity}/set", "high")
        ha.wait_for(sensitivity, lambda p: p == b"high")
        assert app.motion.settings.threshold == 12
        # Garbage is logged and ignored; a change over REST is published.
        ha.seen.clear()
        for garbage in [b"", b"loud", b"\xff", b"custom", b"1" * 5000]:
            ha.publish(f"{sensitivity}/set", garbage)
        requests.put(app.url + "/api/motion", json={"sensitivity": "low"}, timeout=5).raise_for_status()
        ha.wait_for(sensitivity, lambda p: p == b"low")
        assert app.motion.settings.enabled is False
        # Nothing was published between "high" and "low": the garbage changed nothing.
        assert [m.payload for m in ha.seen if m.topic == sensitivity] == []
    # Kept across a restart, like a change from the page; a retained command the broker replays to
    # the new connection is ignored, as for the camera switch.
    app.stop()
    with Recorder(broker.port, [detection]) as ha:
        ha.publish(f"{detection}/set", "ON", retain=True)
    try:
        with Appliance(make_config(tmp_path, mqtt=mqtt_section(broker))) as again:
            assert again.mqtt is not None and again.mqtt.wait_retained_ignored(1, timeout=10)
            assert again.motion.settings.enabled is False and again.motion.settings.sensitivity == "low"
    finally:
        with Recorder(broker.port, [detection]) as ha:
            ha.publish(f"{detection}/set", b"", retain=True)  # clear the retained command


def test_picture_controls_and_night_mode_from_home_assistant(broker: Broker, start_appliance: Start) -> None:
    app = start_with_mqtt(start_appliance, broker)
    state = f"{PREFIX}/picture/state"
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    with Recorder(broker.port, [state, "homeassistant/#"]) as ha:
        number = json.loads(ha.wait_for("homeassistant/number/cam1/brightness/config").payload)
        assert (number["min"], number["max"]) == (-1.0, 1.0)
        assert number["command_topic"] == f"{PREFIX}/picture/brightness/set"
        balance = json.loads(ha.wait_for("homeassistant/select/cam1/white_balance/config").payload)
        assert balance["options"] == ["auto", "daylight", "cloudy", "indoor"]
        night = json.loads(ha.wait_for("homeassistant/select/cam1/night_mode/config").payload)
        assert night["options"] == ["auto", "on", "off"]
        assert json.loads(ha.wait_for(state).payload) == {"night_mode": "off", "night": "OFF"}
        before = decode_jpeg(requests.get(app.url + "/snapshot.jpg", timeout=10).content).mean()
        ha.publish(f"{PREFIX}/picture/brightness/set", "0.6")
        ha.wait_for(state, lambda p: json.loads(p).get("brightness") == 0.6)
        assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 3, timeout=5)
        assert decode_jpeg(requests.get(app.url + "/snapshot.jpg", timeout=10).content).mean() > before + 30
        ha.publish(f"{PREFIX}/picture/night_mode/set", "on")
        ha.wait_for(state, lambda p: json.loads(p)["night"] == "ON")
        # Garbage, out of range and not offered: logged and ignored.
        ha.seen.clear()
        for topic, garbage in [("brightness", b"bright"), ("brightness", b"7"), ("sharpness", b"1"),
                               ("night_mode", b"dusk"), ("brightness", b"\xff")]:
            ha.publish(f"{PREFIX}/picture/{topic}/set", garbage)
        requests.put(app.url + "/api/camera/settings", json={"controls": {"contrast": 1.2}}, timeout=5)
        body = json.loads(ha.wait_for(state, lambda p: "contrast" in json.loads(p)).payload)
        assert body == {"brightness": 0.6, "contrast": 1.2, "night_mode": "on", "night": "ON"}  # garbage: no change


def test_the_motion_sensor_is_off_whenever_the_camera_is_off_or_in_error(
        broker: Broker, start_appliance: Start, tmp_path: Path) -> None:
    """An automation holding a light on while motion is ON must not be left ON by a dead camera."""
    config = make_config(tmp_path, camera={"synthetic": {"objects": 3, "motion_period": 600,
                                                         "motion_duration": 600}})
    camera = FaultyCamera(config.camera)  # the demo scene, moving all the time, and a plug to pull
    app = start_with_mqtt(start_appliance, broker, backend=camera, motion={"warmup_frames": 3})
    motion = f"{PREFIX}/motion/state"
    with Recorder(broker.port, [motion]) as ha:
        ha.wait_for(motion, lambda p: p == b"OFF")
        requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
        ha.wait_for(motion, lambda p: p == b"ON", timeout=15)
        requests.put(app.url + "/api/camera", json={"on": False}, timeout=20).raise_for_status()
        ha.wait_for(motion, lambda p: p == b"OFF", timeout=5)
        requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
        ha.wait_for(motion, lambda p: p == b"ON", timeout=15)
        camera.gone.set()  # unplugged while the scene moves
        ha.wait_for(motion, lambda p: p == b"OFF", timeout=10)
        assert app.controller.state.value == "error"
        camera.gone.clear()


def test_rest_toggle_shows_up_on_mqtt(broker: Broker, start_appliance: Start) -> None:
    app = start_with_mqtt(start_appliance, broker)
    with Recorder(broker.port, [f"{PREFIX}/camera/state"]) as ha:
        ha.wait_for(f"{PREFIX}/camera/state", lambda p: p == b"OFF")
        requests.post(app.url + "/api/camera/toggle", timeout=20).raise_for_status()
        ha.wait_for(f"{PREFIX}/camera/state", lambda p: p == b"ON")


def test_motion_publishes_state_events_and_snapshot(broker: Broker, start_appliance: Start) -> None:
    app = start_with_mqtt(
        start_appliance, broker,
        camera={"synthetic": {"objects": 3, "motion_period": 4, "motion_duration": 1.5}},
        motion={"warmup_frames": 5, "event_gap": 0.5}, server={"public_url": "http://garden-cam.local:8000/"})
    with Recorder(broker.port, [f"{PREFIX}/motion/#", f"{PREFIX}/snapshot"]) as ha:
        ha.wait_for(f"{PREFIX}/motion/state", lambda p: p == b"OFF")
        requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
        ha.wait_for(f"{PREFIX}/motion/state", lambda p: p == b"ON", timeout=15)
        start = json.loads(ha.wait_for(f"{PREFIX}/motion/event", lambda p: b'"start"' in p).payload)
        snapshot = ha.wait_for(f"{PREFIX}/snapshot")
        assert decode_jpeg(snapshot.payload).shape == (240, 320, 3)
        ha.wait_for(f"{PREFIX}/motion/state", lambda p: p == b"OFF", timeout=15)
        end = json.loads(ha.wait_for(f"{PREFIX}/motion/event", lambda p: b'"end"' in p).payload)
    assert start["id"] == end["id"]
    assert start["type"] == "start" and end["type"] == "end"
    assert start["time"].endswith("+00:00") and end["ended_at"]
    assert end["box"]["w"] > 0 and 0 < end["area"] <= 1 and 0 < end["score"] <= 1
    # The clip records from the start: its links, built on server.public_url, are in both messages; an
    # MP4, which a phone opening the link from a notification plays.
    clip = f"http://garden-cam.local:8000/api/events/{start['id']}/clip"
    assert start["clip"] == end["clip"] == clip + ".mp4" and end["clip_download"] == clip
    local = requests.get(app.url + clip.removeprefix("http://garden-cam.local:8000") + ".mp4", timeout=10)
    assert local.status_code == 200 and local.headers["Content-Type"] == "video/mp4"


def test_a_recording_fault_reaches_home_assistant_at_once(broker: Broker, start_appliance: Start,
                                                          tmp_path: Path) -> None:
    folder = tmp_path / "nas"
    folder.mkdir()
    app = start_with_mqtt(start_appliance, broker, mqtt={"stats_interval": 3600},  # not the periodic stats
                          recording={"folder": str(folder), "retry_seconds": 0.5,
                                     "continuous": {"enabled": True, "segment_seconds": 2}})
    with Recorder(broker.port, ["homeassistant/#", f"{PREFIX}/stats"]) as ha:
        config = json.loads(ha.wait_for("homeassistant/binary_sensor/cam1/recording_problem/config").payload)
        assert config["device_class"] == "problem" and config["state_topic"] == f"{PREFIX}/stats"
        assert json.loads(ha.wait_for(f"{PREFIX}/stats").payload)["recording"] == "ok"
        requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
        assert app.recordings is not None
        assert app.recordings.worker.flush(10)
        shutil.rmtree(folder)
        stats = json.loads(ha.wait_for(f"{PREFIX}/stats", lambda p: b"missing" in p, timeout=20).payload)
        assert stats["recording"] == "fault" and str(folder) in stats["recording_fault"]
        folder.mkdir()
        assert json.loads(ha.wait_for(f"{PREFIX}/stats", lambda p: b'"recording": "ok"' in p, timeout=20).payload)[
            "recording_fault"] is None


def test_snapshot_on_request_with_its_privacy_mask(broker: Broker, start_appliance: Start) -> None:
    app = start_with_mqtt(start_appliance, broker, overlay={"timestamp": False})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    mask = {"name": "street", "points": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}
    requests.put(app.url + "/api/camera/settings", json={"masks": [mask]}, timeout=10).raise_for_status()
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 2, timeout=5)
    with Recorder(broker.port, [f"{PREFIX}/snapshot"]) as ha:
        ha.publish(f"{PREFIX}/snapshot/set", "PRESS")
        image = decode_jpeg(ha.wait_for(f"{PREFIX}/snapshot").payload)
    height = image.shape[0]
    assert image[height // 2 + 4:].max() < 25 and image[: height // 2 - 4].mean() > 30  # the street is black


def test_clean_stop_says_offline(broker: Broker, start_appliance: Start) -> None:
    app = start_with_mqtt(start_appliance, broker)
    with Recorder(broker.port, [f"{PREFIX}/availability"]) as ha:
        ha.wait_for(f"{PREFIX}/availability", lambda p: p == b"online")
        app.stop()
        ha.wait_for(f"{PREFIX}/availability", lambda p: p == b"offline")


def test_sigkill_makes_the_broker_publish_offline(broker: Broker, tmp_path: Path) -> None:
    env = {**os.environ, "APPLIANCE_STATE_DIR": str(tmp_path / "state"), "APPLIANCE_MQTT__HOST": "127.0.0.1",
           "APPLIANCE_MQTT__PORT": str(broker.port), "APPLIANCE_MQTT__DEVICE_ID": "cam1"}
    with Recorder(broker.port, [f"{PREFIX}/availability"]) as ha:
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "--camera", "synthetic", "--host",
                                 "127.0.0.1", "--port", "0"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ha.wait_for(f"{PREFIX}/availability", lambda p: p == b"online", timeout=30)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            ha.wait_for(f"{PREFIX}/availability", lambda p: p == b"offline", timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_broker_restart_reconnects_and_republishes(broker: Broker, start_appliance: Start) -> None:
    app = start_with_mqtt(start_appliance, broker)
    bridge = app.mqtt
    assert bridge is not None
    broker.stop()  # no persistence: every retained message is gone with it
    # While the broker is away the appliance keeps working.
    assert requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).json()["state"] == "on"
    broker.start()
    assert bridge.wait_connected(15) or bridge.wait_connected(15)
    with Recorder(broker.port, [f"{PREFIX}/#", "homeassistant/#"]) as ha:
        assert ha.wait_for(f"{PREFIX}/availability", timeout=15).payload == b"online"
        assert ha.wait_for(f"{PREFIX}/camera/state", timeout=15).payload == b"ON"
        ha.wait_for("homeassistant/switch/cam1/camera/config", timeout=15)


def test_tls_with_username_and_password(broker_dir: Path, start_appliance: Start, tmp_path: Path) -> None:
    folder = broker_dir
    make_certs(folder)
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(folder / "passwd"), "camera", "s3cret"], check=True)
    (folder / "passwd").chmod(0o644)
    broker = Broker(folder, extra=(
        f"per_listener_settings false\nallow_anonymous false\npassword_file {folder / 'passwd'}\n"
        f"cafile {folder / 'ca.crt'}\ncertfile {folder / 'server.crt'}\nkeyfile {folder / 'server.key'}"))
    broker.start()
    try:
        secret = tmp_path / "mqtt-password"
        secret.write_text("s3cret\n")
        app = start_appliance(mqtt=mqtt_section(broker, username="camera", password_file=str(secret),
                                                tls={"enabled": True, "ca_file": str(folder / "ca.crt")}))
        assert app.mqtt is not None and app.mqtt.wait_connected(15)
        auth = {"tls": str(folder / "ca.crt"), "username": "camera", "password": "s3cret"}
        with Recorder(broker.port, [f"{PREFIX}/#"], client_kwargs=auth) as ha:
            assert ha.wait_for(f"{PREFIX}/availability").payload == b"online"
            ha.publish(f"{PREFIX}/camera/set", "ON")
            ha.wait_for(f"{PREFIX}/camera/status", lambda p: p == b"on")
    finally:
        broker.stop()


# --- hostile or careless clients on the broker ---------------------------------------------------

def test_a_retained_command_is_ignored_across_a_broker_restart(broker_dir: Path, start_appliance: Start) -> None:
    broker = Broker(broker_dir, extra="allow_anonymous true", persistent=True)
    broker.start()
    try:
        app = start_with_mqtt(start_appliance, broker, mqtt={"command_interval": 0})
        bridge = app.mqtt
        assert bridge is not None
        with Recorder(broker.port, [f"{PREFIX}/camera/status"]) as ha:
            ha.publish(f"{PREFIX}/camera/set", "OFF", retain=True)  # delivered live: an ordinary command
            ha.publish(f"{PREFIX}/camera/set", "ON")
            ha.wait_for(f"{PREFIX}/camera/status", lambda p: p == b"on")
        broker.stop()
        broker.start()  # persistent: the retained OFF comes back to the appliance when it resubscribes
        assert bridge.wait_retained_ignored(1, timeout=30)
        assert bridge.commands.wait_idle(5)
        assert app.controller.wanted_on and app.controller.state.value == "on"
        assert bridge.commands.camera_switches == 1  # the one live ON
    finally:
        broker.stop()


def test_ten_thousand_toggles_end_in_the_last_state_after_a_handful_of_starts(
        broker_dir: Path, start_appliance: Start, tmp_path: Path) -> None:
    broker = Broker(broker_dir, extra="allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0")
    broker.start()
    try:
        camera = CountingCamera(make_config(tmp_path).camera)
        app = start_appliance(backend=camera, mqtt=mqtt_section(broker, command_interval=0.5))
        assert app.mqtt is not None and app.mqtt.wait_connected(10)
        with Recorder(broker.port, [f"{PREFIX}/camera/status"]) as flood:
            for _ in range(10_000):
                flood.client.publish(f"{PREFIX}/camera/set", "TOGGLE", qos=1)
            flood.client.publish(f"{PREFIX}/snapshot/set", "PRESS", qos=1).wait_for_publish(60)
            # If the flood cost the appliance its connection, it reconnects by itself; a command sent
            # meanwhile cannot reach it, so the last word goes to a connected appliance.
            assert app.mqtt.wait_connected(15), "".join(broker.log)
            flood.client.publish(f"{PREFIX}/camera/set", "ON", qos=1).wait_for_publish(10)
        # The last command has reached the appliance after all the others (a status "on" on the way
        # proves nothing: the toggles pass through "on" too), and then the mailbox has done what is
        # left. On one connection every command arrives; if the flood cost the connection, those in
        # flight at that moment are gone (a clean session keeps nothing), which is MQTT's promise.
        assert app.mqtt.wait_last_command("ON", timeout=60), app.mqtt.commands_received
        # One connection from first to last: not one reconnect, and not one loss whose reconnect is yet
        # to come (a connection lost after the last command arrived still lost what was in flight).
        if app.mqtt.connects == 1 and app.mqtt.disconnects == 0:
            assert app.mqtt.wait_commands_received(10_001, timeout=5), app.mqtt.commands_received
        assert app.mqtt.commands.wait_idle(30)
        assert app.controller.wanted_on and app.controller.state.value == "on", "".join(broker.log)
        assert 1 <= camera.opens <= 5, camera.opens
    finally:
        broker.stop()


def test_snapshot_requests_are_rate_limited(broker: Broker, start_appliance: Start) -> None:
    app = start_with_mqtt(start_appliance, broker, mqtt={"snapshot_interval": 60})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    with Recorder(broker.port, [f"{PREFIX}/snapshot"]) as ha:
        for _ in range(200):
            ha.publish(f"{PREFIX}/snapshot/set", "PRESS")
        ha.wait_for(f"{PREFIX}/snapshot")
        assert app.mqtt is not None
        # Everything after the first waits for the interval, merged into one pending request.
        assert app.mqtt.commands.wait_idle(0.5) is False
        assert sum(1 for m in ha.seen if m.topic == f"{PREFIX}/snapshot") == 0
