"""USB/V4L2 cameras, video files, image sequences and stream URLs through OpenCV's ``VideoCapture``.

V4L2 devices are asked for MJPG so USB cameras reach their full frame rate at HD sizes (raw YUYV
over USB 2 tops out near 10 fps at 720p). Files are paced at their own frame rate and loop when
``loop_file`` is set, so a recorded clip can stand in for a camera.

``VideoCapture`` calls block for as long as the driver or FFmpeg likes (a stalled RTSP/HTTP source
or a hung V4L2 device: 30 s, or for ever), and OpenCV does not allow ``release()`` while another
thread is inside ``read()``. So each ``open()`` starts one reader thread that alone creates, reads
and releases its ``VideoCapture``; ``open()`` and ``read(timeout)`` wait for it with deadlines. A
reader that misses a deadline is abandoned: it releases its capture itself when the call it is
stuck in returns, and the next ``open()`` starts a fresh one. Network sources also get FFmpeg's own
open and read timeouts, so an abandoned reader does not linger.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from appliance.camera_backends.base import CameraBackend, CameraError, Control, ControlValue, Frame
from appliance.config import CameraSettings

log = logging.getLogger(__name__)


def _is_url(source: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE) is not None


V4L2_CONTROLS: dict[str, tuple[int, Control]] = {
    "brightness": (cv2.CAP_PROP_BRIGHTNESS, Control("brightness", 0.0, 255.0, 128.0, 1.0)),
    "contrast": (cv2.CAP_PROP_CONTRAST, Control("contrast", 0.0, 255.0, 128.0, 1.0)),
    "saturation": (cv2.CAP_PROP_SATURATION, Control("saturation", 0.0, 255.0, 128.0, 1.0)),
    "sharpness": (cv2.CAP_PROP_SHARPNESS, Control("sharpness", 0.0, 255.0, 128.0, 1.0)),
    "gain": (cv2.CAP_PROP_GAIN, Control("gain", 0.0, 255.0, 0.0, 1.0)),
    "exposure_time": (cv2.CAP_PROP_EXPOSURE, Control("exposure_time", 0.0, 1_000_000.0, 0.0, 100.0,
                                                     unit="µs, 0: automatic")),
}
"""Controls through OpenCV's V4L2 properties, in the driver's own units (the driver clamps them to its
range; what it took is read back). ``exposure_time`` is set in V4L2's 100 µs steps, with its
automatic exposure off (``CAP_PROP_AUTO_EXPOSURE`` 1) or on (3) for 0."""
AUTO_EXPOSURE_ON, AUTO_EXPOSURE_OFF = 3.0, 1.0


def _file_exists(source: str) -> bool:
    """A video file, or an image sequence named by a printf pattern (``frames/in%06d.jpg``) with a file."""
    if re.search(r"%0?\d*d", source):
        return bool(glob.glob(glob.escape(source).replace(re.search(r"%0?\d*d", source).group(0), "*")))
    return os.path.exists(source)


class _Reader:
    """One ``VideoCapture`` and the thread that alone touches it; reads one frame per request."""

    def __init__(self, open_capture: Any, describe: str, loop_file: bool, is_file: bool,
                 probe_controls: bool = False) -> None:
        self._open_capture = open_capture
        self._describe = describe
        self._loop_file = loop_file
        self._is_file = is_file
        self._cond = threading.Condition()
        self._opened = False
        self._failure: str | None = None
        self._wanted = 0  # frames asked for and not yet delivered
        self._frame: np.ndarray | None = None
        self._stop = False
        self.properties: dict[str, float] = {}
        self.probe_controls = probe_controls  # a V4L2 device: find out which controls it has
        self.offered: dict[str, Control] = {}
        self.applied: dict[str, float] = {}  # what the driver took, read back after each set
        self._pending: dict[str, ControlValue] | None = None
        self._thread = threading.Thread(target=self._run, name="opencv-reader", daemon=True)
        self._thread.start()

    def wait_open(self, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._opened or self._failure is not None, timeout):
                raise CameraError(f"opening {self._describe} took longer than {timeout:.0f} s")
            if self._failure is not None:
                raise CameraError(self._failure)

    def read(self, timeout: float) -> np.ndarray:
        with self._cond:
            if self._failure is not None:
                raise CameraError(self._failure)
            self._wanted = 1
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._frame is not None or self._failure is not None, timeout):
                raise CameraError(f"no frame from {self._describe} within {timeout:.2f} s")
            if self._frame is None:
                raise CameraError(self._failure or "the camera failed")
            frame, self._frame = self._frame, None
            return frame

    def set_controls(self, values: dict[str, ControlValue]) -> None:
        """Queue ``values`` for the reader thread, which alone may touch the capture."""
        with self._cond:
            self._pending = dict(values)
            self._cond.notify_all()

    def _apply_controls(self, capture: Any, values: dict[str, ControlValue]) -> None:
        for name, control in self.offered.items():
            prop = V4L2_CONTROLS[name][0]
            value = float(values.get(name, control.default))
            if name == "exposure_time":
                capture.set(cv2.CAP_PROP_AUTO_EXPOSURE, AUTO_EXPOSURE_ON if value == 0 else AUTO_EXPOSURE_OFF)
                if value == 0:
                    continue
                value = max(1.0, round(value / 100.0))
            if not capture.set(prop, value):
                log.warning("%s did not take %s = %g", self._describe, name, value)
            self.applied[name] = capture.get(prop) * (100.0 if name == "exposure_time" else 1.0)

    def stop(self, timeout: float) -> bool:
        """Ask the thread to release the capture and end; False if it is still stuck in OpenCV."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: the reader is stuck in OpenCV; it releases the device when that call returns",
                        self._describe)
            return False
        return True

    def _fail(self, reason: str) -> None:
        with self._cond:
            self._failure = reason
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            capture = self._open_capture()
        except Exception as exc:  # OpenCV raises cv2.error for odd sources
            self._fail(f"cannot open {self._describe}: {exc}")
            return
        try:
            if not capture.isOpened():
                self._fail(f"cannot open {self._describe}")
                return
            self.properties = {"width": capture.get(cv2.CAP_PROP_FRAME_WIDTH),
                               "height": capture.get(cv2.CAP_PROP_FRAME_HEIGHT), "fps": capture.get(cv2.CAP_PROP_FPS)}
            if self.probe_controls:  # a driver without a control answers -1; its current value is its default
                for name, (prop, control) in V4L2_CONTROLS.items():
                    now = capture.get(prop)
                    if now != -1:
                        default = 0.0 if name in ("exposure_time", "gain") else float(now)
                        self.offered[name] = Control(name, control.minimum, control.maximum, default, control.step,
                                                     unit=control.unit)
            with self._cond:
                self._opened = True
                self._cond.notify_all()
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._stop or self._wanted or self._pending is not None)
                    if self._stop:
                        return
                    pending, self._pending = self._pending, None
                if pending is not None:
                    self._apply_controls(capture, pending)
                with self._cond:
                    if not self._wanted:
                        continue
                    self._wanted = 0
                ok, image = capture.read()  # may block for as long as the source likes
                if not ok and self._is_file and self._loop_file:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, image = capture.read()
                if not ok or image is None:
                    self._fail(f"{self._describe} delivered no frame (unplugged or end of stream)")
                    return
                with self._cond:
                    self._frame = image
                    self._cond.notify_all()
        except Exception as exc:
            self._fail(f"{self._describe} failed: {exc}")
        finally:
            capture.release()  # here, on the thread that read: the only safe place


class OpenCVCamera(CameraBackend):
    """A camera, file or stream read by OpenCV."""

    name = "opencv"

    def __init__(self, settings: CameraSettings) -> None:
        self._settings = settings
        self._source: int | str = self._parse_device(settings.device)
        self._reader: _Reader | None = None
        self._closed = threading.Event()
        self._closed.set()
        self._is_file = isinstance(self._source, str) and not self._source.startswith("/dev/") \
            and not _is_url(self._source)
        self._file_period = 0.0
        self._next_due = 0.0

    @staticmethod
    def _parse_device(device: str | None) -> int | str:
        if device is None or device == "":
            return 0
        if device.isdigit():
            return int(device)
        return device

    @staticmethod
    def detect(settings: CameraSettings) -> bool:
        """True when a V4L2 capture device node exists (opening it is left to ``open``)."""
        if settings.device:
            return True
        return any(os.access(path, os.R_OK) for path in sorted(glob.glob("/dev/video*")))

    def describe(self) -> str:
        kind = "video file" if self._is_file else "stream" if _is_url(str(self._source)) else "V4L2 camera"
        source = re.sub(r"//[^/@]*@", "//***@", str(self._source))  # no credentials in logs or on the page
        return f"OpenCV {kind} {source}"

    def _open_capture(self) -> Any:
        """Runs on the reader thread: create and configure the ``VideoCapture``."""
        source = self._source
        settings = self._settings
        if self._is_device:
            capture = cv2.VideoCapture(source, cv2.CAP_V4L2)
            if capture.isOpened():
                width, height = settings.size
                capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
                capture.set(cv2.CAP_PROP_FPS, settings.fps)
                capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # latency over smoothness: never queue old frames
            return capture
        if self._is_file:
            return cv2.VideoCapture(str(source))
        # FFmpeg takes its timeouts only as open parameters, not from set() afterwards.
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(settings.open_timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(settings.read_timeout * 1000)]
        return cv2.VideoCapture(str(source), cv2.CAP_FFMPEG, params)

    @property
    def _is_device(self) -> bool:
        return isinstance(self._source, int) or str(self._source).startswith("/dev/")

    def controls(self) -> dict[str, Control]:
        """A V4L2 camera's controls (once opened, those its driver has); none for files and streams."""
        if not self._is_device:
            return {}
        reader = self._reader
        if reader is not None and reader.offered:
            return reader.offered
        return {name: control for name, (_, control) in V4L2_CONTROLS.items()}

    def set_controls(self, values: Mapping[str, ControlValue]) -> None:
        reader = self._reader
        if reader is not None:
            reader.set_controls(dict(values))

    @property
    def applied_controls(self) -> dict[str, float]:
        """What the driver took, read back after the last ``set_controls``."""
        reader = self._reader
        return dict(reader.applied) if reader is not None else {}

    def open(self) -> None:
        if self._is_file and not _file_exists(str(self._source)):
            raise CameraError(f"video file {self._source} does not exist")
        self._abandon_reader()
        reader = _Reader(self._open_capture, self.describe(), self._settings.loop_file, self._is_file,
                         probe_controls=self._is_device)
        self._reader = reader
        try:
            reader.wait_open(self._settings.open_timeout)
        except CameraError:
            self._abandon_reader()
            raise
        file_fps = reader.properties.get("fps", 0.0) if self._is_file else 0.0
        self._file_period = 1.0 / (file_fps if 0 < file_fps <= 240 else self._settings.fps)
        self._closed.clear()
        self._next_due = time.monotonic()
        log.info("opened %s (%dx%d)", self.describe(), reader.properties.get("width", 0),
                 reader.properties.get("height", 0))

    def _pace(self, timeout: float) -> None:
        """Files would otherwise play as fast as the CPU decodes: release frames at the file's rate."""
        delay = self._next_due - time.monotonic()
        if delay > timeout:
            raise CameraError(f"no frame within {timeout:.2f} s")
        if delay > 0 and self._closed.wait(delay):
            raise CameraError("camera was closed while reading")
        self._next_due = max(self._next_due + self._file_period, time.monotonic() - self._file_period)

    def read(self, timeout: float) -> Frame:
        reader = self._reader
        if reader is None or self._closed.is_set():
            raise CameraError("camera is not open")
        started = time.monotonic()
        if self._is_file:
            self._pace(timeout)
        image = reader.read(max(0.0, timeout - (time.monotonic() - started)))
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return Frame(image=image, timestamp=time.time())

    def _abandon_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.stop(timeout=1.0)

    def close(self) -> None:
        self._closed.set()
        self._abandon_reader()
