"""The three backends and the registry: synthetic directly, OpenCV on a real video file, picamera2 on
its faithful fake."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests

from appliance.camera_backends import MissingCamera, backend_class, choose_backend
from appliance.camera_backends.base import CameraError
from appliance.camera_backends.opencv import OpenCVCamera
from appliance.camera_backends.pi_camera import PiCamera, lores_size
from appliance.camera_backends.synthetic import SyntheticCamera
from appliance.camera_backends.yuv import I420, bgr_of
from appliance.config import CameraSettings
from tests.fake_picamera2 import FakePicamera2, Transform
from tests.helpers import MjpegSource


def settings(**values: object) -> CameraSettings:
    return CameraSettings.model_validate({"size": "320x240", "fps": 30, **values})


# --- synthetic --------------------------------------------------------------------------------

def test_synthetic_frames_are_bgr_of_the_configured_size() -> None:
    with SyntheticCamera(settings(), paced=False) as camera:
        frame = camera.read(1.0)
    assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
    assert frame.gray is None


def test_synthetic_is_deterministic_when_seeded() -> None:
    a = SyntheticCamera(settings(synthetic={"seed": 7}), paced=False)
    b = SyntheticCamera(settings(synthetic={"seed": 7}), paced=False)
    c = SyntheticCamera(settings(synthetic={"seed": 8}), paced=False)
    assert np.array_equal(a.render(42), b.render(42))
    assert not np.array_equal(a.render(42), c.render(42))


def test_synthetic_objects_move_then_rest() -> None:
    camera = SyntheticCamera(settings(synthetic={"motion_period": 2, "motion_duration": 1}), paced=False)
    assert camera.is_moving(0) and not camera.is_moving(45)
    assert not np.array_equal(camera.render(0), camera.render(10))  # moving part of the period
    assert np.array_equal(camera.render(40), camera.render(55))  # still part


def test_synthetic_is_paced_and_interrupted_by_close() -> None:
    camera = SyntheticCamera(settings(fps=2))
    camera.open()
    camera.read(1.0)
    with pytest.raises(CameraError, match="no frame within"):
        camera.read(0.01)  # the next frame is due in 0.5 s
    camera.close()
    with pytest.raises(CameraError):
        camera.read(1.0)


# --- OpenCV on a real video file ---------------------------------------------------------------

@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 120))
    assert writer.isOpened()
    for i in range(10):
        image = np.zeros((120, 160, 3), np.uint8)
        image[:, :, 0] = 255  # pure blue in BGR
        cv2.putText(image, str(i), (60, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        writer.write(image)
    writer.release()
    return path


def test_opencv_reads_a_video_file(video_file: Path) -> None:
    camera = OpenCVCamera(settings(device=str(video_file), loop_file=False))
    with camera:
        frames = [camera.read(1.0) for _ in range(10)]
        with pytest.raises(CameraError, match="end of stream"):
            camera.read(1.0)
    assert frames[0].image.shape == (120, 160, 3)
    blue, green, red = frames[0].image[5, 5]
    assert blue > 200 and green < 60 and red < 60  # BGR order survived the round trip
    assert not np.array_equal(frames[0].image, frames[5].image)
    assert "video file" in camera.describe()


def test_opencv_loops_a_file_and_paces_it(video_file: Path) -> None:
    camera = OpenCVCamera(settings(device=str(video_file), loop_file=True))
    with camera:
        frames = [camera.read(1.0) for _ in range(15)]
        with pytest.raises(CameraError, match="no frame within"):
            camera.read(0.001)  # 25 fps file: the next frame is not due yet
    assert len(frames) == 15


def test_opencv_missing_source_is_a_camera_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="does not exist"):
        OpenCVCamera(settings(device=str(tmp_path / "none.avi"))).open()
    with pytest.raises(CameraError, match="cannot open"):
        OpenCVCamera(settings(device="/dev/video99")).open()


# --- picamera2 on the faithful fake -------------------------------------------------------------

@pytest.fixture
def fake_picamera2() -> Iterator[type[FakePicamera2]]:
    FakePicamera2.instances.clear()
    FakePicamera2.stall.clear()
    FakePicamera2.cameras = [{"Model": "imx708", "Id": "/base/imx708@1a", "Num": 0}]
    yield FakePicamera2
    FakePicamera2.answer_format, FakePicamera2.pad, FakePicamera2.fail_start = None, 64, None
    FakePicamera2.refuse_transform = False


def red(image: np.ndarray) -> bool:
    blue, green, r = (int(value) for value in image)
    return r > 200 and blue < 60 and green < 60


@pytest.mark.parametrize("answer", [None, "NV12", "RGB888"])
def test_picamera2_reads_the_format_and_stride_it_was_given(fake_picamera2: type[FakePicamera2],
                                                              answer: str | None) -> None:
    """Asked for YUV420, a camera may answer NV12 (libcamera's virtual camera) or RGB888, with rows
    padded past the width: each frame is read with what was configured, never what was asked."""
    fake_picamera2.answer_format = answer
    camera = PiCamera(settings(size="640x480", fps=30), camera_factory=lambda: fake_picamera2,
                      transform_factory=Transform)
    with camera:
        frame = camera.read(1.0)
        image = bgr_of(frame.image)  # a frame's picture is the reader's until the next read (the buffer is reused)
        second = camera.read(1.0)
        assert camera.streams["main"] == (answer or "YUV420", (640, 480), {"RGB888": 640 * 3}.get(answer, 640) + 64)
    instance = fake_picamera2.instances[0]
    config = instance.configuration
    assert config["raw"] is None and config["buffer_count"] == 4
    assert config["main"]["size"] == (640, 480) and config["lores"]["size"] == (384, 288)  # 64-px aligned
    # YUV stays in its planes (no BGR image made per frame); RGB formats arrive as BGR.
    assert isinstance(frame.image, np.ndarray if answer == "RGB888" else I420)
    assert image.shape == (480, 640, 3) and image.flags.c_contiguous
    assert red(image[-1, -1]) and red(image[0, -1])  # neither padding nor chroma misread
    if answer == "RGB888":
        assert frame.gray is None  # no Y plane to take: the detector converts
    else:
        lw, lh = config["lores"]["size"]
        assert frame.gray is not None and frame.gray.shape == (lh, lw)
        assert (frame.gray[:, 100:] == 76).all()  # the Y plane, without its padding or chroma
    assert not np.array_equal(image, bgr_of(second.image))
    assert abs(frame.timestamp - time.time()) < 1.0  # the sensor's monotonic time, on the wall clock
    assert instance.outstanding == 0  # every request released
    assert instance.closed and not instance.started


def test_picamera2_thins_a_camera_faster_than_its_fps(fake_picamera2: type[FakePicamera2]) -> None:
    camera = PiCamera(settings(fps=10), camera_factory=lambda: fake_picamera2, transform_factory=Transform)
    with camera:
        instance = fake_picamera2.instances[0]
        instance.configuration["controls"]["FrameRate"] = 40.0  # a camera that ignores the rate asked
        began = time.monotonic()
        for _ in range(6):
            camera.read(1.0)
        seconds = time.monotonic() - began
    assert instance.outstanding == 0
    assert 5 * 0.075 <= seconds < 1.5  # about 10 a second, not 40
    assert instance._index >= 10  # frames in between went back uncopied


def test_picamera2_failed_start_releases_the_camera(fake_picamera2: type[FakePicamera2]) -> None:
    fake_picamera2.fail_start = RuntimeError("Failed to start camera: Cannot allocate memory")
    camera = PiCamera(settings(), camera_factory=lambda: fake_picamera2, transform_factory=Transform)
    with pytest.raises(CameraError, match=r"cannot start Pi camera 0: .*Cannot allocate memory"):
        camera.open()
    assert fake_picamera2.instances[0].closed
    camera.close()  # and closing again is harmless


def test_picamera2_timeout_is_a_camera_error(fake_picamera2: type[FakePicamera2]) -> None:
    camera = PiCamera(settings(), camera_factory=lambda: fake_picamera2, transform_factory=Transform)
    with camera:
        fake_picamera2.stall.set()
        with pytest.raises(CameraError, match="no frame from the Pi camera"):
            camera.read(0.1)


def test_picamera2_absent_camera(fake_picamera2: type[FakePicamera2]) -> None:
    fake_picamera2.cameras = []
    assert not PiCamera.detect(settings(), camera_factory=lambda: fake_picamera2)
    with pytest.raises(CameraError, match="not found"):
        PiCamera(settings(), camera_factory=lambda: fake_picamera2, transform_factory=Transform).open()


def test_lores_keeps_aspect_survives_alignment_and_never_exceeds_main() -> None:
    assert lores_size((1920, 1080)) == (384, 216)
    assert lores_size((1280, 720)) == (384, 216)
    assert lores_size((640, 480)) == (384, 288)
    assert lores_size((320, 240)) == (320, 240)
    for main in [(1920, 1080), (1296, 972), (640, 480), (320, 240), (4056, 3040)]:
        w, h = lores_size(main)
        config = {"main": {"size": main, "format": "RGB888"}, "lores": {"size": (w, h), "format": "YUV420"}}
        FakePicamera2.align_configuration(config)
        assert config["lores"]["size"] == (w, h)  # alignment changes nothing
        assert w <= main[0] and h <= main[1] and h % 2 == 0
        assert abs(w / h - main[0] / main[1]) < 0.03


def test_picamera2_not_importable_here_is_reported_not_raised() -> None:
    if "picamera2" in sys.modules or _importable("picamera2"):
        pytest.fail("this test expects a machine without picamera2; run it where libcamera is absent")
    assert PiCamera.detect(settings()) is False
    with pytest.raises(CameraError, match="picamera2 is not installed"):
        PiCamera(settings()).open()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# --- registry ----------------------------------------------------------------------------------

def test_registry_imports_only_on_demand() -> None:
    assert backend_class("synthetic") is SyntheticCamera
    with pytest.raises(ValueError, match="unknown camera backend"):
        backend_class("webcam9000")
    assert "picamera2" not in sys.modules


def test_auto_prefers_pi_camera_then_v4l2_and_never_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    auto = settings(backend="auto")
    monkeypatch.setattr(PiCamera, "detect", staticmethod(lambda s: False))
    monkeypatch.setattr(OpenCVCamera, "detect", staticmethod(lambda s: False))
    name, missing = choose_backend(auto)
    assert name == "none" and isinstance(missing, MissingCamera)  # never the demo scene
    with pytest.raises(CameraError, match="no camera found"):
        missing.open()
    monkeypatch.setattr(OpenCVCamera, "detect", staticmethod(lambda s: True))
    assert choose_backend(auto)[0] == "opencv"
    monkeypatch.setattr(PiCamera, "detect", staticmethod(lambda s: True))
    assert choose_backend(auto)[0] == "picamera2"
    monkeypatch.setattr(PiCamera, "detect", staticmethod(lambda s: 1 / 0))  # a crashing probe is skipped
    assert choose_backend(auto)[0] == "opencv"


# --- OpenCV on a network source that stalls -------------------------------------------------------

@pytest.fixture
def mjpeg_source() -> Iterator[MjpegSource]:
    source = MjpegSource()
    yield source
    source.close()


def test_opencv_network_source_that_stalls_times_out_and_recovers(mjpeg_source: MjpegSource) -> None:
    camera = OpenCVCamera(settings(device=mjpeg_source.url, read_timeout=0.5, open_timeout=5.0))
    camera.open()
    try:
        first = camera.read(5.0)
        assert first.image.shape == (240, 320, 3)
        mjpeg_source.stall()
        started = time.monotonic()
        with pytest.raises(CameraError, match="no frame"):
            while True:  # frames already buffered may still come; then the deadline must hold
                camera.read(0.5)
        assert time.monotonic() - started < 0.5 + 2.0  # buffered frames, then one read_timeout
        closing = time.monotonic()
        camera.close()  # the reader may be stuck in FFmpeg: close must not wait for it
        assert time.monotonic() - closing < 1.5
        mjpeg_source.resume()
        camera.open()
        assert camera.read(5.0).image.shape == (240, 320, 3)
    finally:
        camera.close()


def test_opencv_source_that_accepts_and_never_sends_fails_open_in_time(mjpeg_source: MjpegSource) -> None:
    mjpeg_source.stall()
    camera = OpenCVCamera(settings(device=mjpeg_source.url, read_timeout=0.5, open_timeout=0.6))
    started = time.monotonic()
    with pytest.raises(CameraError):
        camera.open()
    assert time.monotonic() - started < 0.6 + 1.0
    camera.close()


def test_picamera2_frames_stay_in_their_yuv_planes_and_motion_takes_the_lores_y_plane(
        start_appliance: Any, fake_picamera2: type[FakePicamera2], monkeypatch: pytest.MonkeyPatch) -> None:
    conversions: list[tuple[int, int]] = []
    encoder_conversions: list[tuple[int, int]] = []
    convert = cv2.cvtColor

    def counted(image: np.ndarray, code: int, *args: Any, **kwargs: Any) -> np.ndarray:
        on_encoder = threading.current_thread().name == "h264-encoder"
        (encoder_conversions if on_encoder else conversions).append((code, image.shape[0] * image.shape[1]))
        return convert(image, code, *args, **kwargs)

    camera = PiCamera(settings(size="640x480"), camera_factory=lambda: fake_picamera2, transform_factory=Transform)
    app = start_appliance(backend=camera, camera={"size": "640x480"})
    monkeypatch.setattr(cv2, "cvtColor", counted)
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    snapshot = requests.get(app.url + "/snapshot.jpg", timeout=10)
    assert snapshot.status_code == 200, snapshot.text
    assert app.pipeline.stats().frames_analysed > 0
    # No colour conversion at all, on either thread: the JPEG is encoded from the planes, the overlay
    # (its text too) drawn on them, the H.264 encoder of the MP4 event clips takes them, the detector
    # never makes a grey copy.
    assert conversions == [] and encoder_conversions == [], (conversions, encoder_conversions)
    assert app.pipeline.stats().frames_encoded > 0
    image = cv2.imdecode(np.frombuffer(snapshot.content, np.uint8), cv2.IMREAD_COLOR)
    assert red(image[-5, -5])  # the fake's red scene is still red


def test_picamera2_takes_flips_and_half_turns_in_libcamera_and_the_rest_itself(
        fake_picamera2: type[FakePicamera2]) -> None:
    def mirrored(camera: PiCamera) -> bool:
        """The fake's band grows from the scene's left edge: on the right, the picture is mirrored."""
        image = bgr_of(camera.read(1.0).image)
        return not red(image[240, -2]) and red(image[240, 1])

    camera = PiCamera(settings(size="640x480"), camera_factory=lambda: fake_picamera2, transform_factory=Transform)
    assert camera.orient(180, False, False) == (0, False, False)  # nothing left for the capture thread
    with camera:
        transform = fake_picamera2.instances[-1].configuration["transform"]
        assert (transform.hflip, transform.vflip) == (True, True)
        assert mirrored(camera)
    assert camera.orient(90, True, False) == (90, False, False)  # a quarter turn the ISP cannot do
    with camera:
        transform = fake_picamera2.instances[-1].configuration["transform"]
        assert (transform.hflip, transform.vflip) == (True, False)
    # A camera that refuses the flips (libcamera's virtual one): the backend mirrors the frames itself.
    fake_picamera2.refuse_transform = True
    assert camera.orient(0, True, False) == (0, False, False)
    with camera:
        assert mirrored(camera)


def test_picamera2_controls_are_the_cameras_own_and_reach_libcamera(fake_picamera2: type[FakePicamera2]) -> None:
    camera = PiCamera(settings(), camera_factory=lambda: fake_picamera2, transform_factory=Transform)
    assert set(camera.controls()) == {"brightness", "contrast", "saturation", "sharpness", "exposure_compensation",
                                      "exposure_time", "gain", "white_balance"}
    with camera:
        offered = camera.controls()
        assert (offered["exposure_time"].minimum, offered["exposure_time"].maximum) == (0.0, 112015443.0)
        assert offered["gain"].maximum == 16.0  # this camera's own ranges, 0 kept for automatic
        camera.set_controls({"brightness": 0.3, "exposure_time": 10000, "white_balance": "daylight"})
        camera.read(1.0)
    sent = fake_picamera2.instances[-1].controls_set[-1]
    assert sent == {"Brightness": 0.3, "Contrast": 1.0, "Saturation": 1.0, "Sharpness": 1.0, "ExposureValue": 0.0,
                    "AeEnable": False, "ExposureTime": 10000, "AwbEnable": True, "AwbMode": 5}
