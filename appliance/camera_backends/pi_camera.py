"""The Raspberry Pi camera through picamera2 (libcamera).

Two streams from one capture: ``main`` for viewing and a small ``lores`` stream whose Y plane is a
ready grey image for motion detection. Both are asked for as ``YUV420``, the format a Pi's ISP
delivers natively (``RGB888`` costs the ISP a conversion and 2x the memory per buffer), but what is
used is what libcamera *configured*, read back after ``configure``: the format (a camera may answer
``NV12`` whatever was asked, as libcamera's virtual camera does), the size (it snaps to sizes the
camera has), the stride (YUV420 rows are padded to 64 px) and the colour space. Each frame is copied
out of its buffer with exactly those numbers into an ``I420`` picture and never made BGR: the JPEG,
H.264 and motion all take the planes (``appliance/camera_backends/yuv.py``). The colour space asked
for is sYCC, JPEG's own (full range, BT.601), so the planes go into a JPEG untouched; a camera that
answers with limited range (libcamera's default for video) is brought to full range in the copy.

Other things a real Pi does that this handles:

- A camera held by another process (``Device or resource busy``) is a ``CameraError`` saying so; the
  capture loop retries with backoff and recovers when the other process lets go.
- ``close()`` always stops and closes the camera, also after a failed ``configure`` or ``start``, so a
  failure never leaves libcamera's handle held for the next attempt.
- ``camera.buffer_count`` sets the buffers (4 by default): each costs a frame of CMA memory, of which a
  Pi Zero 2 W has 64 MiB for everything.
- Frame times come from the request's ``SensorTimestamp`` (the monotonic clock, in ns) where present.
- A camera that delivers faster than ``camera.fps`` (one that ignores ``FrameRate``, or the virtual
  camera, which has no pacing at all) is thinned to that rate before any frame is copied.

picamera2 is imported lazily through ``camera_factory`` so this module loads on any machine. The tests
run it against the real picamera2 and libcamera (libcamera's software ``virtual`` camera in a Debian 13
root) and, for what that camera cannot do, against ``tests/fake_picamera2.py``.
"""

from __future__ import annotations

import errno
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np

from appliance.camera_backends.base import CameraBackend, CameraError, Control, ControlValue, Frame
from appliance.camera_backends.yuv import I420, YUV420_FORMATS, from_buffer, oriented
from appliance.config import CameraSettings

log = logging.getLogger(__name__)

# YUV 4:2:0 formats (YUV420_FORMATS) are copied into I420 pictures; packed RGB ones become BGR, by
# this OpenCV conversion (None: libcamera's RGB888 is B, G, R in memory, already OpenCV's order).
_RGB_TO_BGR: dict[str, int | None] = {
    "RGB888": None,
    "BGR888": cv2.COLOR_RGB2BGR,
    "XRGB8888": cv2.COLOR_BGRA2BGR,
    "XBGR8888": cv2.COLOR_RGBA2BGR,
}
_BYTES_PER_PIXEL = {"RGB888": 3, "BGR888": 3, "XRGB8888": 4, "XBGR8888": 4}
READABLE = (*YUV420_FORMATS, *_RGB_TO_BGR)
"""Every main-stream format the backend reads."""


# The appliance's controls and the libcamera controls that carry them, with a Pi camera's usual ranges;
# once a camera is open its own ranges (picamera2's camera_controls) replace these.
PI_CONTROLS = {control.name: control for control in (
    Control("brightness", -1.0, 1.0, 0.0, 0.05),
    Control("contrast", 0.0, 32.0, 1.0, 0.05),
    Control("saturation", 0.0, 32.0, 1.0, 0.05),
    Control("sharpness", 0.0, 16.0, 1.0, 0.1),
    Control("exposure_compensation", -8.0, 8.0, 0.0, 0.25, unit="EV"),
    Control("exposure_time", 0.0, 1_000_000.0, 0.0, 100.0, unit="µs, 0: automatic"),
    Control("gain", 0.0, 16.0, 0.0, 0.1, unit="x, 0: automatic"),
    Control("white_balance", choices=("auto", "incandescent", "tungsten", "fluorescent", "indoor", "daylight",
                                      "cloudy"), default="auto"),
)}
LIBCAMERA_NAMES = {"brightness": "Brightness", "contrast": "Contrast", "saturation": "Saturation",
                   "sharpness": "Sharpness", "exposure_compensation": "ExposureValue", "exposure_time": "ExposureTime",
                   "gain": "AnalogueGain", "white_balance": "AwbMode"}
AWB_MODES = ("auto", "incandescent", "tungsten", "fluorescent", "indoor", "daylight", "cloudy")
"""libcamera's AwbModeEnum, in its order (its values are these positions)."""


def libcamera_controls(values: Mapping[str, ControlValue], available: Mapping[str, Any]) -> dict[str, Any]:
    """The libcamera controls for the appliance's ``values`` (the whole set: absent ones go back to
    their default), limited to what the camera has (``available``: picamera2's camera_controls)."""
    wanted = {name: values.get(name, control.default) for name, control in PI_CONTROLS.items()}
    out: dict[str, Any] = {}
    for name in ("brightness", "contrast", "saturation", "sharpness", "exposure_compensation"):
        out[LIBCAMERA_NAMES[name]] = float(wanted[name])
    exposure, gain = float(wanted["exposure_time"]), float(wanted["gain"])
    out["AeEnable"] = exposure == 0 and gain == 0  # either set by hand: the rest of exposure is held too
    if exposure > 0:
        out["ExposureTime"] = int(exposure)
    if gain > 0:
        out["AnalogueGain"] = gain
    out["AwbEnable"] = True
    out["AwbMode"] = AWB_MODES.index(str(wanted["white_balance"]))
    return {name: value for name, value in out.items() if name in available}


def _load_transform(**flips: bool) -> Any:
    from libcamera import Transform  # type: ignore[import-not-found]  # beside picamera2, from apt

    return Transform(**flips)


def _jpeg_colour_space() -> Any:
    """libcamera's sYCC (JPEG's YCbCr, full range), or None where libcamera is absent (a test's fake)."""
    try:
        from libcamera import ColorSpace  # type: ignore[import-not-found]
    except ImportError:
        return None
    return ColorSpace.Sycc()


def full_range(colour_space: Any) -> bool:
    """Whether libcamera's configured ``colour_space`` is full range (sYCC, JPEG); limited when not said."""
    return "full" in str(getattr(colour_space, "range", "")).lower()


def _load_picamera2() -> Any:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ImportError as exc:  # libcamera's bindings exist only on Raspberry Pi OS (and Debian 13)
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


def to_bgr(buffer: np.ndarray, fmt: str, size: tuple[int, int], stride: int) -> np.ndarray:
    """The BGR image in a stream's 1-D ``buffer`` of packed RGB ``fmt``, ``size`` and ``stride`` (bytes
    per row)."""
    if fmt not in _RGB_TO_BGR:
        raise CameraError(f"{fmt} is no packed RGB format (they are {', '.join(_RGB_TO_BGR)})")
    width, height = size
    depth = _BYTES_PER_PIXEL[fmt]
    if buffer.size < height * stride or stride < width * depth:
        raise CameraError(f"a {fmt} frame of {width}x{height} (stride {stride}) does not fit its buffer "
                          f"of {buffer.size} bytes")
    pixels = buffer[:height * stride].reshape(height, stride)[:, :width * depth].reshape(height, width, depth)
    code = _RGB_TO_BGR[fmt]
    # Always a new array: the buffer may be the camera's own memory, mapped only while the request is held.
    return pixels.copy() if code is None else cv2.cvtColor(pixels, code)


def luma(buffer: np.ndarray, fmt: str, size: tuple[int, int], stride: int) -> np.ndarray | None:
    """The Y plane of a YUV 4:2:0 buffer (the first ``height`` rows), copied; None for other formats."""
    if fmt not in YUV420_FORMATS:
        return None
    width, height = size
    return buffer[:height * stride].reshape(height, stride)[:, :width].copy()


def _load_mapped_array() -> Any:
    """picamera2's MappedArray, or None where picamera2 is absent (a test's stand-in)."""
    try:
        from picamera2 import MappedArray  # type: ignore[import-not-found]
    except ImportError:
        return None
    return MappedArray


def is_busy(exc: BaseException) -> bool:
    """Whether opening failed because another process (or a crashed run's leftover) holds the camera."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EBUSY:
            return True
        text = str(seen).lower()
        if "busy" in text or "in use" in text or "failed to acquire" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def h264_hardware() -> bool:
    """Whether this machine has the Pi's H.264 encoder (the bcm2835-codec on Pi Zero 2 W to Pi 4).

    Detected, not assumed: a Pi 5 has none, and neither has any machine that is not a Pi. The
    encoder is the V4L2 memory-to-memory device ``/dev/video11``, whose driver names itself.
    """
    try:
        with open("/sys/class/video4linux/video11/name", encoding="ascii", errors="replace") as name:
            return "bcm2835-codec-encode" in name.read()
    except OSError:
        return False


class PiCamera(CameraBackend):
    """A libcamera camera with a main stream for viewing and a lores stream for motion."""

    name = "picamera2"

    def __init__(self, settings: CameraSettings, camera_factory: Callable[[], Any] | None = None,
                 motion_width: int = 400, monotonic_ns: Callable[[], int] = time.monotonic_ns,
                 clock: Callable[[], float] = time.time, transform_factory: Callable[..., Any] | None = None,
                 colour_space_factory: Callable[[], Any] | None = None) -> None:
        self._settings = settings
        self._factory = camera_factory or _load_picamera2
        self._number = int(settings.device) if settings.device and settings.device.isdigit() else 0
        self._lores: tuple[int, int] = lores_size(settings.size, motion_width)
        self._camera: Any = None
        self._streams: dict[str, tuple[str, tuple[int, int], int]] = {}  # name: (format, size, stride)
        self._monotonic_ns = monotonic_ns
        self._clock = clock
        self._period_ns = int(1e9 / settings.fps)
        self._last_ns: int | None = None
        self._paced = threading.Event()  # never set: its wait() is the pacing pause
        self._transform_factory = transform_factory or _load_transform
        self._flips = (False, False)  # asked of libcamera
        self._cpu_flips = (False, False)  # what libcamera did not take: done here, to both streams
        self._available: Mapping[str, Any] | None = None  # the camera's own controls, once opened
        self._colour_space_factory = colour_space_factory or _jpeg_colour_space
        self._mapped_array: Any = None  # picamera2's MappedArray, found when the camera opens
        self._full_range = False  # what the camera configured: JPEG's full range, or video's limited
        self._picture_buffer: I420 | None = None  # the main stream's frames are copied into this one

    @staticmethod
    def detect(settings: CameraSettings, camera_factory: Callable[[], Any] | None = None) -> bool:
        """True when libcamera lists at least one camera; never raises where picamera2 is absent."""
        try:
            cls = (camera_factory or _load_picamera2)()
            return len(cls.global_camera_info()) > 0
        except Exception as exc:  # a broken libcamera install must not stop `auto` from trying USB
            log.debug("no Pi camera: %s", exc)
            return False

    def describe(self) -> str:
        w, h = self._settings.size
        lw, lh = self._lores
        streams = ""
        if self._streams:
            main_format, (mw, mh), _ = self._streams["main"]
            w, h = mw, mh
            streams = f", {main_format}"
        return f"Pi camera {self._number} {w}x{h} @ {self._settings.fps:g} fps (lores {lw}x{lh}{streams})"

    @property
    def streams(self) -> dict[str, tuple[str, tuple[int, int], int]]:
        """What libcamera configured, per stream: (format, (width, height), stride); empty while closed."""
        return dict(self._streams)

    def orient(self, rotation: int, hflip: bool, vflip: bool) -> tuple[int, bool, bool]:
        """The flips, and the 180° of a turn, are libcamera's (free, in the ISP); a quarter turn is left."""
        if rotation in (180, 270):  # a half turn is both flips
            hflip, vflip = not hflip, not vflip
        self._flips = (hflip, vflip)
        return rotation % 180, False, False

    def controls(self) -> dict[str, Control]:
        """A Pi camera's controls; once opened, those this camera has, with its own ranges."""
        available = self._available
        if available is None:
            return PI_CONTROLS
        offered = {}
        for name, control in PI_CONTROLS.items():
            limits = available.get(LIBCAMERA_NAMES[name])
            if limits is None:
                continue
            if not control.choices and isinstance(limits, tuple | list) and len(limits) >= 2 \
                    and all(isinstance(limit, int | float) for limit in limits[:2]):
                low, high = float(limits[0]), float(limits[1])
                if name in ("exposure_time", "gain"):
                    low = 0.0  # 0 is ours: automatic
                if low < high:
                    control = Control(name, low, high, control.default, control.step, unit=control.unit)
            offered[name] = control
        return offered

    def set_controls(self, values: Mapping[str, ControlValue]) -> None:
        """Called by the capture thread after each open and on each change, so nothing is kept here."""
        if self._camera is not None:
            self._camera.set_controls(libcamera_controls(values, self._available or {}))

    def open(self) -> None:
        cls = self._factory()
        self._mapped_array = _load_mapped_array() if cls.__module__.startswith("picamera2") else None
        cameras = cls.global_camera_info()
        if self._number >= len(cameras):
            raise CameraError(f"Pi camera {self._number} not found ({len(cameras)} attached)")
        try:
            camera = cls(self._number)
        except Exception as exc:  # libcamera raises RuntimeError (EBUSY inside) when held elsewhere
            if is_busy(exc):
                raise CameraError(f"Pi camera {self._number} is in use by another process "
                                  "(Device or resource busy); retrying") from exc
            raise CameraError(f"cannot open Pi camera {self._number}: {exc}") from exc
        self._camera = camera  # from here on, close() releases it whatever fails next
        try:
            hflip, vflip = self._flips
            colour_space = self._colour_space_factory()
            config = camera.create_video_configuration(
                **({} if colour_space is None else {"colour_space": colour_space}),
                main={"size": tuple(self._settings.size), "format": "YUV420"},
                lores={"size": self._lores, "format": "YUV420"},
                raw=None,  # no Bayer stream: libcamera picks the sensor mode for the main size
                buffer_count=self._settings.buffer_count,
                controls={"FrameRate": float(self._settings.fps)},
                transform=self._transform_factory(hflip=hflip, vflip=vflip),
            )
            camera.align_configuration(config)  # sizes the ISP handles without copies (YUV420: 64 px)
            camera.configure(config)
            self._streams = {name: self._configured(camera, name) for name in ("main", "lores")}
            # A camera may refuse the flips (libcamera then adjusts the orientation it reports back):
            # what it did not take is done here, to both streams.
            given = camera.camera_configuration().get("transform")
            self._cpu_flips = (hflip != bool(getattr(given, "hflip", hflip)),
                               vflip != bool(getattr(given, "vflip", vflip)))
            self._full_range = full_range(camera.camera_configuration().get("colour_space"))
            self._available = getattr(camera, "camera_controls", None) or {}
            self._lores = self._streams["lores"][1]
            camera.start()
        except Exception as exc:
            self.close()
            raise CameraError(f"cannot start Pi camera {self._number}: {exc}") from exc
        self._last_ns = None
        main_format, main_size, main_stride = self._streams["main"]
        log.info("Pi camera %d configured: main %s %dx%d (stride %d), lores %s %dx%d, %d buffers",
                 self._number, main_format, *main_size, main_stride, self._streams["lores"][0], *self._lores,
                 self._settings.buffer_count)

    @staticmethod
    def _configured(camera: Any, name: str) -> tuple[str, tuple[int, int], int]:
        stream = camera.stream_configuration(name)
        fmt, (width, height) = str(stream["format"]), tuple(stream["size"])
        stride = stream.get("stride") or width * _BYTES_PER_PIXEL.get(fmt, 1)
        if fmt not in READABLE:
            raise CameraError(f"libcamera configured {name} as {fmt}, which the appliance cannot read "
                              f"(it reads {', '.join(READABLE)})")
        return fmt, (int(width), int(height)), int(stride)

    def read(self, timeout: float) -> Frame:
        camera = self._camera
        if camera is None:
            raise CameraError("Pi camera is not open")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CameraError(f"no frame from the Pi camera within {timeout:.2f} s")
            try:
                request = camera.capture_request(wait=left)
            except TimeoutError as exc:
                raise CameraError(f"no frame from the Pi camera within {timeout:.2f} s") from exc
            except Exception as exc:
                raise CameraError(f"Pi camera failed: {exc}") from exc
            try:
                sensor_ns = request.get_metadata().get("SensorTimestamp")
                taken_ns = sensor_ns if isinstance(sensor_ns, int) and sensor_ns > 0 else self._monotonic_ns()
                early = None if self._last_ns is None else self._last_ns + self._period_ns * 3 // 4 - taken_ns
                if early is None or early <= 0:
                    self._last_ns = taken_ns
                    image = self._main_picture(request)
                    gray = luma(request.make_buffer("lores"), *self._streams["lores"])
            finally:
                request.release()
            if early is not None and early > 0:
                # Faster than camera.fps: that frame went back uncopied; the next one is taken when
                # it is due, waiting as a paced camera would (bounded by the read's own deadline).
                self._paced.wait(min(early / 1e9, max(0.0, deadline - time.monotonic())))
                continue
            if self._cpu_flips != (False, False):
                code = -1 if all(self._cpu_flips) else 1 if self._cpu_flips[0] else 0
                image = oriented(image, 0, *self._cpu_flips) if isinstance(image, I420) else cv2.flip(image, code)
                gray = None if gray is None else cv2.flip(gray, code)
            age = (self._monotonic_ns() - taken_ns) / 1e9
            if not 0.0 <= age < 2.0:  # a timestamp on some other clock: the frame is taken as new
                age = 0.0
            return Frame(image=image, timestamp=self._clock() - age, gray=gray)

    def _main_picture(self, request: Any) -> np.ndarray | I420:
        """The main stream's buffer copied out while ``request`` is held: YUV 4:2:0 stays planar, in
        one I420 picture reused frame after frame (no 1.4 MB allocated per 720p frame: a frame's
        picture is the capture thread's until its next ``read()``, and every consumer that keeps one
        longer, the H.264 encoder and the clip ring, takes its own copy); RGB formats become BGR.

        Read through picamera2's ``MappedArray``, a view of the mapped buffer itself, so the frame is
        copied once (``make_buffer`` copies it whole first, which a stand-in without it gets)."""
        if self._mapped_array is None:
            return self._copied_out(request.make_buffer("main"))
        with self._mapped_array(request, "main", reshape=False, write=False) as view:
            return self._copied_out(view.array)

    def _copied_out(self, main: np.ndarray) -> np.ndarray | I420:
        fmt, size, stride = self._streams["main"]
        if fmt not in YUV420_FORMATS:
            return to_bgr(main, fmt, size, stride)
        try:
            self._picture_buffer = from_buffer(main, fmt, size, stride, self._full_range, self._picture_buffer)
        except ValueError as exc:
            raise CameraError(f"the Pi camera's {fmt} frame cannot be read: {exc}") from exc
        return self._picture_buffer

    def close(self) -> None:
        camera, self._camera = self._camera, None
        self._streams = {}
        self._picture_buffer = None  # switched off, the appliance holds no frame
        if camera is None:
            return
        try:
            camera.stop()
        except Exception as exc:  # stopping a camera that never started; close it all the same
            log.debug("stopping the Pi camera: %s", exc)
        finally:
            camera.close()
            # picamera2's objects hold their buffers (CMA memory on a Pi) and descriptors in reference
            # cycles, freed only when the cycle collector happens to run. Switched on and off a few
            # times, a Pi Zero 2 W (64 MiB of CMA) then fails to allocate: free them now.
            del camera
            gc.collect()

