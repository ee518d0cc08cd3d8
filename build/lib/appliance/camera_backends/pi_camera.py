"""The Raspberry Pi camera through picamera2 (libcamera).

Two streams from one capture: ``main`` in ``RGB888`` (which libcamera lays out as **BGR** bytes, the
order OpenCV wants, so no conversion) for viewing, and a small ``lores`` ``YUV420`` stream whose Y
plane is a ready grey image for motion detection. The lores array has shape ``(h * 3 // 2, stride)``;
the Y plane is ``a[:h, :w]`` and ``stride`` may exceed ``w``.

picamera2 is imported lazily through ``camera_factory`` so this module loads on any machine, and the
tests hand in a fake that follows the documented API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.camera_backends.base import CameraBackend, CameraError, Frame
from appliance.config import CameraSettings

log = logging.getLogger(__name__)


def _load_picamera2() -> Any:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ImportError as exc:  # libcamera's bindings exist only on Raspberry Pi OS
        raise CameraError(f"picamera2 is not installed: {exc}") from exc
    return Picamera2


def lores_size(main: tuple[int, int], target_width: int = 400) -> tuple[int, int]:
    """A lores size near ``target_width`` px wide, keeping main's aspect ratio, never above main.

    The width is a multiple of 64 px, as picamera2's ``align_configuration`` makes YUV420 widths, so
    aligning it later does not change the aspect ratio; the height is even.
    """
    width = max(64, min(main[0], target_width) // 64 * 64)
    height = max(2, round(width * main[1] / main[0]) & ~1)
    return min(width, main[0]), min(height, main[1] & ~1)


class PiCamera(CameraBackend):
    """A libcamera camera with a BGR main stream and a YUV420 lores stream."""

    name = "picamera2"

    def __init__(self, settings: CameraSettings, camera_factory: Callable[[], Any] | None = None,
                 motion_width: int = 400) -> None:
        self._settings = settings
        self._factory = camera_factory or _load_picamera2
        self._number = int(settings.device) if settings.device and settings.device.isdigit() else 0
        self._lores: tuple[int, int] = lores_size(settings.size, motion_width)
        self._camera: Any = None

    @staticmethod
    def detect(settings: CameraSettings, camera_factory: Callable[[], Any] | None = None) -> bool:
        """True when libcamera lists at least one camera; never raises where picamera2 is absent."""
        try:
            cls = (camera_factory or _load_picamera2)()
        except CameraError:
            return False
        return len(cls.global_camera_info()) > 0

    def describe(self) -> str:
        w, h = self._settings.size
        lw, lh = self._lores
        return f"Pi camera {self._number} {w}x{h} @ {self._settings.fps:g} fps (lores {lw}x{lh})"

    def open(self) -> None:
        cls = self._factory()
        cameras = cls.global_camera_info()
        if self._number >= len(cameras):
            raise CameraError(f"Pi camera {self._number} not found ({len(cameras)} attached)")
        try:
            camera = cls(self._number)
        except Exception as exc:  # libcamera raises RuntimeError/IndexError when busy or gone
            raise CameraError(f"cannot open Pi camera {self._number}: {exc}") from exc
        try:
            config = camera.create_video_configuration(
                main={"size": tuple(self._settings.size), "format": "RGB888"},
                lores={"size": self._lores, "format": "YUV420"},
                buffer_count=4,
                controls={"FrameRate": float(self._settings.fps)},
            )
            camera.align_configuration(config)  # sizes the ISP handles without copies (YUV420: 64 px)
            camera.configure(config)
            # libcamera may adjust sizes: slice the Y plane with what was configured, not asked for.
            self._lores = tuple(camera.stream_configuration("lores")["size"])
            camera.start()
        except Exception as exc:
            camera.close()
            raise CameraError(f"cannot start Pi camera {self._number}: {exc}") from exc
        self._camera = camera

    def read(self, timeout: float) -> Frame:
        camera = self._camera
        if camera is None:
            raise CameraError("Pi camera is not open")
        try:
            request = camera.capture_request(wait=timeout)
        except TimeoutError as exc:
            raise CameraError(f"no frame from the Pi camera within {timeout:.2f} s") from exc
        except Exception as exc:
            raise CameraError(f"Pi camera failed: {exc}") from exc
        try:
            main = request.make_array("main")
            lores = request.make_array("lores")
        finally:
            request.release()
        lw, lh = self._lores
        # Copy the Y plane so the frame does not keep the whole YUV buffer (and its stride) alive.
        gray = lores[:lh, :lw].copy()
        return Frame(image=main, timestamp=time.time(), gray=gray)

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop()
        finally:
            camera.close()
