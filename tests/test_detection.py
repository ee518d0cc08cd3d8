"""Object detection on real footage, through the real appliance: the model, the thread, the events.

The camera is OpenCV's file camera playing Debian's opencv-doc videos (``vtest.avi``: people walking
past a parked van and car; ``tree.avi``: a tree in the wind) and CDnet's highway frames as an image
sequence, each at its own frame rate, as a camera would deliver them. The model is the one users
install, put in the tests' cache by ``install-model --from`` in scripts/test.sh.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.config import DEFAULT_LABELS, DEFAULT_MODEL, ConfigError
from appliance.detection.install import InstallError, install
from appliance.detection.objects import ObjectNews
from appliance.runtime import Appliance
from tests.broker import Broker, Recorder
from tests.helpers import (
    FOOTAGE,
    HIGHWAY,
    MODEL_TARBALL,
    MODELS,
    SceneCamera,
    decode_jpeg,
    make_config,
    require,
    stream_rate_and_api_latency,
)
from tests.test_mqtt import broker, broker_dir  # noqa: F401  (fixtures)

Start = Callable[..., Appliance]
REAL_MOTION = {"fps": 5.0, "background_weight": 0.05}  # the defaults: the footage is real, not a test scene
VEHICLES = ("car", "truck", "bus")


def detection(**extra: Any) -> dict[str, Any]:
    return {"enabled": True, "model": str(MODELS / DEFAULT_MODEL), **extra}


def footage(source: Path | str, **sections: Any) -> dict[str, Any]:
    """Sections that make the file (or image sequence) the camera, with detection on."""
    camera = {"backend": "opencv", "device": str(source), "read_timeout": 2.0, **sections.pop("camera", {})}
    return {"camera": camera, "motion": REAL_MOTION, "events": {"clip": {"enabled": False}},
            "detection": detection(**sections.pop("detection", {})), **sections}


class News:
    """Every object message the appliance's dispatcher delivers, for a test to wait on."""

    def __init__(self, app: Appliance) -> None:
        self.items: list[ObjectNews] = []
        self._cond = threading.Condition()
        app.controller.add_object_listener(self._hear)

    def _hear(self, news: ObjectNews) -> None:
        with self._cond:
            self.items.append(news)
            self._cond.notify_all()

    def alerts(self, *labels: str) -> list[ObjectNews]:
        with self._cond:
            return [n for n in self.items if n.kind == "alert" and (not labels or n.label in labels)]

    def wait(self, check: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(check, timeout)


pytestmark = [pytest.mark.detection]


def need_highway() -> None:
    require(HIGHWAY.is_dir(), f"the CDnet highway frames are missing ({HIGHWAY}; set APPLIANCE_SHARED_DATA)")


@pytest.mark.timeout(180)
def test_people_walking_past_parked_cars_raise_person_alerts_and_no_car_alert(start_appliance: Start) -> None:
    objects = {label: {} for label in ("person", *VEHICLES)}
    app = start_appliance(**footage(FOOTAGE / "vtest.avi", detection={"objects": objects}))
    news = News(app)
    app.controller.on()
    assert news.wait(lambda: len(news.alerts("person")) >= 3, 60), news.items
    # The van and the car stand in view the whole time, people walking past them: 40 s of footage.
    started = time.monotonic()
    assert not news.wait(lambda: bool(news.alerts(*VEHICLES)), max(0.0, 40 - (time.monotonic() - started)))
    status = requests.get(app.url + "/api/status", timeout=5).json()["detection"]
    assert status["enabled"] is True and status["detections"] > 50 and status["errors"] == 0
    assert status["model"] == DEFAULT_MODEL and status["counts"]["person"] >= 1
    app.controller.off()
    app.controller.flush()
    assert news.wait(lambda: news.items[-1].counts["person"] == 0, 10)  # off: nobody is in view any more
    app.recorder.flush()
    # The events say what was seen, with each object's best picture, its box drawn.
    body = requests.get(app.url + "/api/events?label=person", timeout=5).json()
    assert body["total"] >= 1
    event = body["events"][0]
    assert event["alert"] is True and event["labels"] == ["person"]
    first = event["objects"][0]
    assert first["label"] == "person" and first["score"] >= 0.7 and first["has_snapshot"]
    picture = decode_jpeg(requests.get(f"{app.url}/api/events/{event['id']}/objects/{first['number']}.jpg",
                                       timeout=5).content)
    assert picture.shape[1] == 640  # vtest is 768 wide: the snapshot is scaled to at most 640
    assert requests.get(app.url + "/api/events?label=car", timeout=5).json()["total"] == 0
    assert requests.get(app.url + "/api/events?label=Car!", timeout=5).status_code == 400
    assert requests.get(f"{app.url}/api/events/{event['id']}/objects/9.jpg", timeout=5).status_code == 404


@pytest.mark.timeout(180)
def test_a_tree_in_the_wind_raises_no_object_alert(start_appliance: Start) -> None:
    """tree.avi decodes to 68 frames (4.5 s; its header says 444): played over and over for 30 s."""
    app = start_appliance(**footage(FOOTAGE / "tree.avi", detection={"keep_motion_events": False}))
    news = News(app)
    app.controller.on()
    assert not news.wait(lambda: bool(news.alerts()), 30), news.alerts()
    app.controller.flush()
    assert news.alerts() == []
    assert app.detection is not None and app.detection.stats().detections > 30  # it looked, and often
    app.recorder.flush()
    assert app.events.count() >= 1  # the branches move: a motion event is under way
    app.controller.off()
    app.controller.flush()
    app.recorder.flush()
    assert app.events.count() == 0  # it ended without a wanted object: not kept, as configured


@pytest.mark.timeout(180)
def test_cars_on_the_highway_raise_car_alerts(start_appliance: Start) -> None:
    need_highway()
    app = start_appliance(**footage(HIGHWAY / "in%06d.jpg"))
    news = News(app)
    app.controller.on()
    assert news.wait(lambda: len(news.alerts("car")) >= 3, 60), news.items
    assert news.alerts("person", "dog", "cat") == []
    app.controller.flush()
    app.recorder.flush()
    event = requests.get(app.url + "/api/events?label=car", timeout=5).json()["events"][0]
    assert "car" in event["labels"] and event["objects"][0]["box"]["w"] > 10


@pytest.mark.timeout(240)
def test_detection_never_slows_the_stream_or_the_api(start_appliance: Start) -> None:
    need_highway()
    measured = {}
    for on in (False, True):
        sections = footage(HIGHWAY / "in%06d.jpg")
        sections["detection"]["enabled"] = on
        app = start_appliance(**sections)
        app.controller.on()
        assert app.pipeline.wait_for_frames(30, 20)
        measured[on] = stream_rate_and_api_latency(app, 10)
        if on:
            assert app.detection is not None and app.detection.stats().detections >= 20  # it ran throughout
        app.stop()
    (rate_off, api_off), (rate_on, api_on) = measured[False], measured[True]
    assert rate_on >= 0.9 * rate_off, measured
    # Within 10 %, or 2 ms where 10 % is less: a median of a few milliseconds moves by more than that
    # with the scheduler alone.
    assert api_on <= max(1.1 * api_off, api_off + 0.002), measured


@pytest.mark.timeout(120)
@pytest.mark.parametrize("yuv", [False, True], ids=["bgr", "camera-planes"])
def test_frames_the_detector_has_no_time_for_are_skipped_not_queued(start_appliance: Start, yuv: bool) -> None:
    """A camera at 120 frames/s with motion in every frame: frames keep coming while the model is busy.
    Also as the Pi delivers them (I420 planes and a small grey image): the detector takes the planes."""
    sections = footage(HIGHWAY / "in%06d.jpg", detection={"fps": 30, "region": "frame"})
    sections["camera"] = {"backend": "synthetic", "fps": 120}
    sections["motion"] = {"fps": 20}
    camera = SceneCamera(make_config(Path("/nonexistent"), camera={"fps": 120}).camera, yuv=yuv)
    camera.moving.set()
    app = start_appliance(backend=camera, **sections)
    app.controller.on()
    assert app.pipeline.wait_for_frames(600, 30)
    stats = app.detection.stats() if app.detection else None
    assert stats is not None and stats.detections > 20 and stats.skipped > 10  # not waited for, not queued
    assert app.detection is not None and app.detection.errors == 0
    assert app.pipeline.stats().fps >= 100  # the camera's own rate, the detector busy or not


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_mqtt_gets_counts_and_a_message_with_the_picture_for_each_alert(
        start_appliance: Start, broker: Broker) -> None:  # noqa: F811
    need_highway()
    prefix = "appliance/road"
    with Recorder(broker.port, [f"{prefix}/objects/#"]) as heard:
        app = start_appliance(mqtt={"host": "127.0.0.1", "port": broker.port, "device_id": "road"},
                              **footage(HIGHWAY / "in%06d.jpg"))
        assert app.mqtt is not None and app.mqtt.wait_connected(10)
        heard.wait_for(f"{prefix}/objects/car", lambda payload: payload == b"0")  # retained, before anything
        app.controller.on()
        message = json.loads(heard.wait_for(f"{prefix}/objects/event", timeout=60).payload)
        assert message["kind"] == "alert" and message["label"] == "car" and message["score"] >= 0.7
        assert message["event"].endswith(f"/api/events/{message['event_id']}")
        assert message["frame"] == {"width": 320, "height": 240} and message["box"]["w"] > 0
        heard.wait_for(f"{prefix}/objects/car", lambda payload: int(payload) >= 1)
        picture = decode_jpeg(heard.wait_for(f"{prefix}/objects/car/snapshot").payload)
        assert picture.shape[:2] == (240, 320)
        app.controller.off()
        heard.wait_for(f"{prefix}/objects/car", lambda payload: payload == b"0")  # off: gone


# --- start-up: a model that cannot work stops the appliance at once, saying how to put it right ----------

def test_configured_on_without_the_model_says_how_to_install_it(tmp_path: Path) -> None:
    config = make_config(tmp_path, detection={"enabled": True})
    with pytest.raises(ConfigError, match=r"cannot read the detection model .*models/mobilenet_ssd_v2.*"
                                          r"python -m appliance install-model"):
        Appliance(config)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bytes flipped"])
def test_a_corrupt_model_file_stops_start_up_with_a_clear_error(tmp_path: Path, damage: str) -> None:
    """Some damage makes the TFLite runtime abort the process as it loads: tried in a child first, it
    is an error at start-up, never a dead appliance (nor a dead test run)."""
    good = (MODELS / DEFAULT_MODEL).read_bytes()
    broken = {"garbage": b"TFL3" + bytes(range(256)) * 40, "truncated": good[: len(good) // 3],
              "bytes flipped": good[:64] + bytes(b ^ 0x5A for b in good[64:4096]) + good[4096:]}[damage]
    model = tmp_path / "broken.tflite"
    model.write_bytes(broken)
    (tmp_path / DEFAULT_LABELS).write_text("0 person\n")
    config = make_config(tmp_path, detection={"enabled": True, "model": str(model), "objects": {"person": {}}})
    with pytest.raises(ConfigError, match=r"detection: .*broken\.tflite (is not a TFLite model|crashed the TFLite "
                                          r"runtime|is not an SSD model|does not run)"):
        Appliance(config)


def test_a_model_of_another_shape_stops_start_up(tmp_path: Path) -> None:
    """The Edge TPU build of the same model: its custom operator does not run on a CPU."""
    with tarfile.open(MODEL_TARBALL) as tar:
        plugin = tar.extractfile("package/dist/plugin.zip")
        assert plugin is not None
        import zipfile

        archive = zipfile.ZipFile(io.BytesIO(plugin.read()))
    model = tmp_path / "edgetpu.tflite"
    model.write_bytes(archive.read("fs/mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"))
    (tmp_path / DEFAULT_LABELS).write_text(archive.read("fs/coco_labels.txt").decode())
    config = make_config(tmp_path, detection={"enabled": True, "model": str(model)})
    with pytest.raises(ConfigError, match=r"detection: .*edgetpu.tflite"):
        Appliance(config)


def test_a_label_the_model_does_not_know_stops_start_up(tmp_path: Path) -> None:
    config = make_config(tmp_path, detection=detection(objects={"person": {}, "unicorn": {}}))
    with pytest.raises(ConfigError, match="the model knows no unicorn"):
        Appliance(config)


def test_without_the_runtime_start_up_names_the_package(tmp_path: Path) -> None:
    script = ("import sys; sys.modules['ai_edge_litert'] = None\n"
              "from appliance.__main__ import main\n"
              "sys.exit(main(['--camera', 'synthetic', '--port', '0']))")
    env = {"APPLIANCE_DETECTION__ENABLED": "true", "APPLIANCE_DETECTION__MODEL": str(MODELS / DEFAULT_MODEL),
           "APPLIANCE_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    assert "the TFLite runtime is missing" in result.stderr and "ai-edge-litert" in result.stderr


def test_the_installer_checks_every_hash(tmp_path: Path) -> None:
    data = MODEL_TARBALL.read_bytes()
    written = install(tmp_path / "models", data)
    assert sorted(path.name for path in written) == sorted([DEFAULT_MODEL, DEFAULT_LABELS])
    assert (tmp_path / "models" / DEFAULT_MODEL).read_bytes() == (MODELS / DEFAULT_MODEL).read_bytes()
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 1
    with pytest.raises(InstallError, match="SHA-256"):
        install(tmp_path / "elsewhere", bytes(tampered))
    with pytest.raises(InstallError, match="not a zip archive"):
        install(tmp_path / "elsewhere", b"PK not really a zip")
    assert not (tmp_path / "elsewhere").exists()
    result = subprocess.run([sys.executable, "-m", "appliance", "install-model", "--from", str(tmp_path / "nope.tgz"),
                             "--dest", str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "nope.tgz" in result.stderr
