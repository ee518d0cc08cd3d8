"""The picture over the real server: orientation, privacy masks, controls, night mode.

Each is checked where a user would see it: the stream, a snapshot, an event's snapshot and a clip
frame, since the point of doing it on the capture thread is that every output agrees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests
from gpiozero.pins.mock import MockFactory

from appliance.camera_backends.base import CameraError
from appliance.capture.picture import NightSwitch
from appliance.config import CameraSettings, PictureSettings
from appliance.runtime import Appliance
from tests.helpers import (
    SceneCamera,
    clip_pictures,
    decode_jpeg,
    iter_mjpeg,
    make_config,
    next_motion,
    scene_event,
    start_scene,
)

SHORT_CLIPS = {"pre_seconds": 0.3, "post_seconds": 0.3}
GREEN = (0, 255, 0)


class MarkedScene(SceneCamera):
    """The test scene with a green block in the sensor's top-left corner: where it lands says which
    way the picture was turned."""

    def picture(self) -> np.ndarray:
        image = super().picture()
        image[:40, :40] = GREEN
        return image


class IlluminatedScene(SceneCamera):
    """The test scene lit by IR LEDs on the night output, as a real garden is: while the pin is high
    every pixel is brighter (x1.3 + 20, the IR switch measured for docs/motion.md). Grey alone keeps
    each pixel's brightness, so without the light the switch would be no test of the detector."""

    def __init__(self, settings: CameraSettings, pin: Any, yuv: bool = False) -> None:
        super().__init__(settings, yuv)
        self._pin = pin

    def picture(self) -> np.ndarray:
        image = super().picture()
        return cv2.convertScaleAbs(image, alpha=1.3, beta=20) if self._pin.state else image


def settings(app: Any, body: dict[str, Any]) -> requests.Response:
    return requests.put(app.url + "/api/camera/settings", json=body, timeout=10)


def green_corner(image: np.ndarray) -> tuple[str, str]:
    """Which corner of ``image`` is green: ("top" | "bottom", "left" | "right")."""
    height, width = image.shape[:2]
    corners = {(v, h): image[y0:y0 + 10, x0:x0 + 10] for v, y0 in (("top", 5), ("bottom", height - 15))
               for h, x0 in (("left", 5), ("right", width - 15))}
    found = [name for name, patch in corners.items()
             if patch[..., 1].mean() > 200 and patch[..., 0].mean() < 60 and patch[..., 2].mean() < 60]
    assert len(found) == 1, f"green in {found}"
    return found[0]


def expected_corner(rotation: int, hflip: bool, vflip: bool) -> tuple[str, str]:
    """Where the top-left corner goes, worked out on a 2x2 grid with numpy (not with the appliance's code)."""
    grid = np.array([[1, 0], [0, 0]])
    if hflip:
        grid = np.fliplr(grid)
    if vflip:
        grid = np.flipud(grid)
    grid = np.rot90(grid, k=-rotation // 90)  # clockwise
    row, column = (int(value) for value in np.argwhere(grid == 1)[0])
    return ("top", "bottom")[row], ("left", "right")[column]


BOTH_PATHS = pytest.mark.parametrize("yuv", [False, True], ids=["bgr", "yuv"])
"""The capture thread's two paths: BGR frames (OpenCV's cameras, the demo) and I420 planes (the Pi)."""


@pytest.mark.parametrize(("rotation", "hflip", "vflip", "yuv"),
                         [(0, False, False, False), (90, False, False, False), (180, False, False, False),
                          (270, False, False, False), (0, True, False, False), (0, False, True, False),
                          (90, True, False, False), (270, False, False, True), (90, True, False, True)])
def test_each_orientation_reaches_the_stream_snapshots_events_and_clips(
        start_appliance: Any, tmp_path: Path, rotation: int, hflip: bool, vflip: bool, yuv: bool) -> None:
    camera = MarkedScene(make_config(tmp_path).camera, yuv)
    app = start_appliance(backend=camera, camera={"rotation": rotation, "hflip": hflip, "vflip": vflip},
                          motion={"warmup_frames": 5, "event_gap": 0.2, "background_weight": 1.0, "start_frames": 2},
                          events={"clip": {**SHORT_CLIPS, "fps": 10}})
    feed = app.live.subscribe()
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    size = (240, 320) if rotation in (90, 270) else (320, 240)  # (width, height) of the picture shown
    corner = expected_corner(rotation, hflip, vflip)
    with requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) as stream:
        streamed = decode_jpeg(next(iter_mjpeg(stream))[1])
    snapshot = decode_jpeg(requests.get(app.url + "/snapshot.jpg", timeout=10).content)
    record = scene_event(app, camera, feed, still_frames=6, moving_frames=8)
    event = decode_jpeg(requests.get(f"{app.url}/api/events/{record['id']}/snapshot.jpg", timeout=10).content)
    clip = clip_pictures(app, record["id"])[0]  # MP4 (the default): decoded
    for name, image in (("stream", streamed), ("snapshot", snapshot), ("event", event), ("clip", clip)):
        assert (image.shape[1], image.shape[0]) == size, name
        assert green_corner(image) == corner, name
    status = requests.get(app.url + "/api/status", timeout=10).json()
    assert tuple(status["frame_size"]) == size  # the size the API reports is the turned one
    orientation = requests.get(app.url + "/api/camera/settings", timeout=10).json()["orientation"]
    assert orientation == {"rotation": rotation, "hflip": hflip, "vflip": vflip}


@BOTH_PATHS
def test_masks_are_black_in_every_output_and_hide_motion(start_appliance: Any, tmp_path: Path, yuv: bool) -> None:
    # No timestamp: the overlay is drawn over the masks (it is no part of the scene).
    app, camera, feed = start_scene(start_appliance, tmp_path, clip=SHORT_CLIPS, overlay={"timestamp": False},
                                    yuv=yuv)
    # The left half is a neighbour's garden: masked at run time, from the next frame on.
    left = {"name": "neighbour", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}
    answer = settings(app, {"masks": [left]})
    assert answer.status_code == 200 and answer.json()["masks"] == [left], answer.text
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 2, timeout=5)
    record = scene_event(app, camera, feed, still_frames=8, moving_frames=16)  # the square crosses both halves
    assert record["box"]["x"] >= 0.5 * 320 - 2, record["box"]  # motion found only where it may be seen
    outputs = {"snapshot": decode_jpeg(requests.get(app.url + "/snapshot.jpg", timeout=10).content),
               "event": decode_jpeg(requests.get(f"{app.url}/api/events/{record['id']}/snapshot.jpg",
                                                 timeout=10).content),
               "clip": clip_pictures(app, record["id"])[0]}
    with requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) as stream:
        outputs["stream"] = decode_jpeg(next(iter_mjpeg(stream))[1])
    for name, image in outputs.items():
        masked, open_half = image[:, : image.shape[1] // 2 - 4], image[:, image.shape[1] // 2 + 4:]
        assert masked.max() <= 24, f"{name}: the mask is not black ({masked.max()})"  # JPEG noise at the edge
        assert open_half.mean() > 60, name
    # Motion only inside a mask raises no event: the square's whole band is masked.
    band = {"name": "street", "points": [[0, 0.25], [1, 0.25], [1, 0.75], [0, 0.75]]}
    assert settings(app, {"masks": [band]}).status_code == 200
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 8, timeout=5)
    before = requests.get(app.url + "/api/events", timeout=5).json()["total"]
    camera.moving.set()
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 16, timeout=10)
    camera.moving.clear()
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 4, timeout=10)
    assert requests.get(app.url + "/api/events", timeout=5).json()["total"] == before
    assert not app.pipeline.stats().motion_active


def test_controls_are_checked_all_or_nothing_and_change_the_picture(start_appliance: Any) -> None:
    app = start_appliance()
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    body = requests.get(app.url + "/api/camera/settings", timeout=10).json()
    assert body["offered"]["brightness"] == {"kind": "number", "minimum": -1.0, "maximum": 1.0, "step": 0.05,
                                             "default": 0.0, "unit": ""}
    assert body["offered"]["white_balance"]["choices"] == ["auto", "daylight", "cloudy", "indoor"]
    assert "sharpness" not in body["offered"]  # the demo camera has none
    before = decode_jpeg(requests.get(app.url + "/snapshot.jpg", timeout=10).content).mean()
    for bad, says in (({"controls": {"brightness": 5}}, "brightness must be from -1 to 1, not 5"),
                      ({"controls": {"sharpness": 1, "brightness": 0.5}}, "does not offer sharpness"),
                      ({"controls": {"white_balance": "neon"}}, "white_balance must be one of"),
                      ({"controls": {"brightness": "high"}}, "brightness must be a number"),
                      ({"zoom": 2}, "unknown key(s): zoom"),
                      ({"night_mode": "dusk"}, "night_mode"),
                      ({"masks": [{"points": [[0, 0], [2, 0], [0, 1]]}]}, "outside the frame"),
                      ([1, 2], "must be a JSON object")):
        answer = settings(app, bad)
        assert answer.status_code == 400 and says in answer.json()["error"], (bad, answer.text)
    assert requests.get(app.url + "/api/camera/settings", timeout=10).json()["controls"] == {}  # nothing changed
    assert settings(app, {"controls": {"brightness": 0.6}}).json()["controls"] == {"brightness": 0.6}
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 3, timeout=5)
    after = decode_jpeg(requests.get(app.url + "/snapshot.jpg", timeout=10).content).mean()
    assert after > before + 30  # applied from the next frames, without restarting the camera
    assert app.controller.state.value == "on"
    # null puts a control back to the camera's default.
    assert settings(app, {"controls": {"brightness": None}}).json()["controls"] == {}


def test_picture_settings_survive_a_restart_and_bad_config_controls_stop_start_up(tmp_path: Path) -> None:
    mask = {"name": "window", "points": [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]}
    with Appliance(make_config(tmp_path)) as app:
        settings(app, {"controls": {"contrast": 1.5, "white_balance": "cloudy"}, "night_mode": "auto",
                       "masks": [mask]}).raise_for_status()
    with Appliance(make_config(tmp_path)) as app:
        body = requests.get(app.url + "/api/camera/settings", timeout=10).json()
        assert body["controls"] == {"contrast": 1.5, "white_balance": "cloudy"}
        assert body["night_mode"] == "auto" and body["masks"] == [mask]
        assert app.picture.settings.masks[0].name == "window"  # what the capture thread reads
    from appliance.config import ConfigError

    with pytest.raises(ConfigError, match=r"picture\.controls: this camera does not offer sharpness"):
        Appliance(make_config(tmp_path / "other", picture={"controls": {"sharpness": 2}}))


@pytest.mark.parametrize(("kind", "yuv"), [("mp4", False), ("mjpeg", False), ("mjpeg", True)],
                         ids=["mp4-bgr", "mjpeg-bgr", "mjpeg-yuv"])
def test_a_mask_drawn_just_before_an_event_hides_its_area_in_the_whole_clip_pre_roll_included(
        start_appliance: Any, tmp_path: Path, kind: str, yuv: bool) -> None:
    """The pre-roll ring (encoded packets for MP4, raw frames for Motion-JPEG) holds frames taken
    before the mask was drawn: an event that starts right after must not store them with the
    neighbour's garden in view."""
    app, camera, feed = start_scene(start_appliance, tmp_path, clip={"pre_seconds": 1.0, "post_seconds": 0.3,
                                                                     "format": kind},
                                    overlay={"timestamp": False}, yuv=yuv)
    assert app.pipeline.wait_for_frames(30, timeout=10)  # a full second of pre-roll, unmasked
    left = {"name": "neighbour", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}
    assert settings(app, {"masks": [left]}).status_code == 200
    record = scene_event(app, camera, feed, still_frames=1, moving_frames=16)  # the event starts at once
    assert record["clip"]["format"] == kind
    pictures = clip_pictures(app, record["id"])
    assert len(pictures) >= 3
    for number, image in enumerate(pictures):
        masked = image[:, : image.shape[1] // 2 - 4]
        assert masked.max() <= 24, f"clip frame {number} shows what the mask hides ({masked.max()})"


@BOTH_PATHS
def test_a_night_mode_switch_drives_the_output_greys_the_picture_and_raises_no_event(
        start_appliance: Any, tmp_path: Path, yuv: bool) -> None:
    factory = MockFactory()
    try:
        pin = factory.pin(22)
        camera = IlluminatedScene(make_config(tmp_path).camera, pin, yuv)
        app, _, feed = start_scene(start_appliance, tmp_path, gpio={"night_pin": 22},
                                   parts={"pin_factory": factory}, camera_backend=camera)
        assert app.panel.night is not None and pin.state is False
        assert app.pipeline.wait_for_frames(15, timeout=10)  # the background is learnt (warm-up: 5)
        assert settings(app, {"night_mode": "on"}).json()["night_mode"] == "on"
        assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 3, timeout=5)
        assert app.picture.night_active and pin.state is True  # the IR-cut filter / IR LEDs follow
        grey = decode_jpeg(requests.get(app.url + "/snapshot.jpg", timeout=10).content).astype(int)
        assert np.abs(grey[..., 0] - grey[..., 2]).mean() < 3  # no colour left
        assert requests.get(app.url + "/api/camera/settings", timeout=10).json()["night_active"] is True
        # An event would start within two analysed frames (start_frames 2, analysed at the camera's 20 fps).
        assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 12, timeout=10)
        assert settings(app, {"night_mode": "off"}).status_code == 200
        assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 12, timeout=10)
        assert pin.state is False and not app.picture.night_active
        assert requests.get(app.url + "/api/events", timeout=5).json()["total"] == 0  # the switch is no motion
        camera.moving.set()  # while real motion still is
        assert next_motion(feed, "start")["kind"] == "motion"
    finally:
        factory.reset()


def test_night_mode_auto_waits_out_the_hold_and_does_not_flap_at_dusk() -> None:
    picture = PictureSettings(night_mode="auto", night_below=40, night_above=80, night_hold=20)
    switch = NightSwitch()
    assert not switch.update(picture, 30.0, 0.0)  # dark, but not for long enough yet
    assert not switch.update(picture, 60.0, 10.0)  # between the limits: the count starts again
    assert not switch.update(picture, 30.0, 15.0)
    assert not switch.update(picture, 30.0, 34.0)
    assert switch.update(picture, 30.0, 35.5)  # 20 s below 40: night
    assert switch.update(picture, 70.0, 60.0)  # dusk flicker between the limits changes nothing
    assert switch.update(picture, 90.0, 61.0)
    assert switch.update(picture, None, 90.0)  # not measured: as it was
    assert not switch.update(picture, 90.0, 81.5)  # 20 s above 80: day
    assert switch.update(PictureSettings(night_mode="on"), 250.0, 100.0)


class FakeCapture:
    """What OpenCV's VideoCapture offers a V4L2 camera: properties the driver clamps to its range."""

    RANGES = {cv2.CAP_PROP_BRIGHTNESS: (0, 200), cv2.CAP_PROP_CONTRAST: (0, 100), cv2.CAP_PROP_EXPOSURE: (3, 2047),
              cv2.CAP_PROP_AUTO_EXPOSURE: (1, 3), cv2.CAP_PROP_FRAME_WIDTH: (320, 320),
              cv2.CAP_PROP_FRAME_HEIGHT: (240, 240), cv2.CAP_PROP_FPS: (30, 30)}

    def __init__(self) -> None:
        self.values = {prop: float(low) for prop, (low, _) in self.RANGES.items()}
        self.values[cv2.CAP_PROP_BRIGHTNESS] = 100.0
        self.sets: list[tuple[int, float]] = []

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return self.values.get(prop, -1.0)

    def set(self, prop: int, value: float) -> bool:
        if prop not in self.RANGES:
            return False
        low, high = self.RANGES[prop]
        self.values[prop] = float(min(max(value, low), high))
        self.sets.append((prop, value))
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        return True, np.full((240, 320, 3), 90, np.uint8)

    def release(self) -> None:
        pass


def test_opencv_sets_v4l2_properties_and_reads_back_what_the_driver_took(monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.camera_backends.opencv import OpenCVCamera

    capture = FakeCapture()
    monkeypatch.setattr(OpenCVCamera, "_open_capture", lambda self: capture)
    camera = OpenCVCamera(CameraSettings(backend="opencv", device="/dev/video0", size=(320, 240)))
    assert set(camera.controls()) == {"brightness", "contrast", "saturation", "sharpness", "gain", "exposure_time"}
    with camera:
        offered = camera.controls()
        assert set(offered) == {"brightness", "contrast", "exposure_time"}  # what this driver answers
        assert offered["brightness"].default == 100.0  # its value at open is its default
        camera.set_controls({"brightness": 250, "exposure_time": 5000})
        camera.read(1.0)  # the reader applies them before its next frame
        assert camera.applied_controls == {"brightness": 200.0, "contrast": 0.0, "exposure_time": 5000.0}
        assert (cv2.CAP_PROP_AUTO_EXPOSURE, 1.0) in capture.sets and (cv2.CAP_PROP_EXPOSURE, 50.0) in capture.sets
        camera.set_controls({})
        camera.read(1.0)
        assert capture.values[cv2.CAP_PROP_AUTO_EXPOSURE] == 3.0 and capture.values[cv2.CAP_PROP_BRIGHTNESS] == 100.0
    with pytest.raises(CameraError):
        camera.read(0.1)
