"""USB/V4L2 cameras, video files and stream URLs through OpenCV's ``VideoCapture``.

V4L2 devices are asked for MJPG so USB cameras reach their full frame rate at HD sizes (raw YUYV
over USB 2 tops out near 10 fps at 720p). Files are paced at their own frame rate and loop when
``loop_file`` is set, so a recorded clip can stand in for a camera.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from typing import Any

import cv2

from appliance.camera_backends.base import CameraBackend, CameraError, Frame
from appliance.config import CameraSettings

log = logging.getLogger(__name__)


def _is_url(source: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE) is not None


class OpenCVCamera(CameraBackend):
    """A camera, file or stream read by OpenCV."""

    name = "opencv"

    def __init__(self, settings: CameraSettings) -> None:
        self._settings = settings
        self._source: int | str = self._parse_device(settings.device)
        self._capture: Any = None
        self._lock = threading.Lock()
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
        return f"OpenCV {kind} {self._source}"

    def open(self) -> None:
        source = self._source
        if self._is_file and not os.path.exists(str(source)):
            raise CameraError(f"video file {source} does not exist")
        is_v4l2 = isinstance(source, int) or str(source).startswith("/dev/")
        capture = cv2.VideoCapture(source, cv2.CAP_V4L2) if is_v4l2 else cv2.VideoCapture(source)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"cannot open {self.describe()}")
        if is_v4l2:
            width, height = self._settings.size
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            capture.set(cv2.CAP_PROP_FPS, self._settings.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # latency over smoothness: never queue old frames
        elif not self._is_file:
            capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._settings.read_timeout * 1000)
        file_fps = capture.get(cv2.CAP_PROP_FPS) if self._is_file else 0.0
        self._file_period = 1.0 / (file_fps if 0 < file_fps <= 240 else self._settings.fps)
        with self._lock:
            self._capture = capture
        self._closed.clear()
        self._next_due = time.monotonic()
        log.info("opened %s (%dx%d)", self.describe(), capture.get(cv2.CAP_PROP_FRAME_WIDTH),
                 capture.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def _pace(self, timeout: float) -> None:
        """Files would otherwise play as fast as the CPU decodes: release frames at the file's rate."""
        delay = self._next_due - time.monotonic()
        if delay > timeout:
            raise CameraError(f"no frame within {timeout:.2f} s")
        if delay > 0 and self._closed.wait(delay):
            raise CameraError("camera was closed while reading")
        self._next_due = max(self._next_due + self._file_period, time.monotonic() - self._file_period)

    def read(self, timeout: float) -> Frame:
        capture = self._capture
        if capture is None or self._closed.is_set():
            raise CameraError("camera is not open")
        if self._is_file:
            self._pace(timeout)
        ok, image = capture.read()
        if not ok and self._is_file and self._settings.loop_file and not self._closed.is_set():
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = capture.read()
        if not ok or image is None:
            raise CameraError(f"{self.describe()} delivered no frame (unplugged or end of stream)")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return Frame(image=image, timestamp=time.time())

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()
