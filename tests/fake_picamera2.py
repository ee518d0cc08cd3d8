"""A stand-in for picamera2, kept for what libcamera's virtual camera cannot do.

The real picamera2 and libcamera run in the camera test group (``tests/test_camera_stack.py``) on
libcamera's software ``virtual`` camera. That camera delivers only NV12, with rows never padded, and
never stalls: so the formats and padded strides of a real Pi (``YUV420`` with rows padded to 64 px,
``RGB888`` in BGR order), a capture that times out and a ``start`` that fails are tested here, on a
fake that follows picamera2's API as the real one behaves:

``Picamera2.global_camera_info()`` is static and ``[]`` without cameras;
``create_video_configuration(main=..., lores=..., raw=..., buffer_count=..., controls=...)``;
``align_configuration`` (YUV420 widths to 64 px); ``configure`` fills in each stream's ``stride``
and ``framesize``, and may answer another ``format`` than was asked (``answer_format``);
``stream_configuration(name)``; ``start``, ``stop``, ``close``; ``capture_request(wait=seconds)``
raising ``TimeoutError`` when no frame comes; a request's ``make_buffer(name)`` is the stream's
bytes, padding included; ``get_metadata()`` has ``SensorTimestamp`` on the monotonic clock (ns);
every request must be ``release()``d (counted here).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

RED_YUV = (76, 85, 255)
"""A pure red scene in YUV (BT.601): what the fake camera films."""


def _stride(fmt: str, width: int, pad: int) -> int:
    depth = {"RGB888": 3, "BGR888": 3, "XRGB8888": 4, "XBGR8888": 4}.get(fmt, 1)
    return width * depth + pad


class FakeRequest:
    def __init__(self, camera: FakePicamera2, index: int) -> None:
        self._camera = camera
        self._index = index
        self._taken_ns = time.monotonic_ns()
        self.released = False

    def make_buffer(self, name: str) -> np.ndarray:
        assert not self.released, "buffer made from a released request"
        stream = self._camera.configuration[name]
        fmt, (w, h), stride = stream["format"], stream["size"], stream["stride"]
        band = (self._index * 8) % w or 1  # a band that grows frame by frame, from the left edge of the scene
        flipped = bool(getattr(self._camera.configuration.get("transform"), "hflip", False))
        band_at = slice(w - band, w) if flipped else slice(0, band)  # the sensor read out mirrored
        if fmt in ("YUV420", "NV12"):
            rows = np.full((h * 3 // 2, stride), 255, np.uint8)  # padding garbage everywhere first
            rows[:h, :w] = RED_YUV[0]
            rows[:h, band_at] = 150
            chroma = rows[h:].reshape(-1)  # chroma rows hold stride // 2 bytes per chroma line
            lines, half = h // 2, stride // 2
            for line in range(lines):
                start = line * half
                if fmt == "YUV420":  # U plane, then V plane, each (h/2) x (stride/2)
                    chroma[start:start + w // 2] = RED_YUV[1]
                    chroma[lines * half + start:lines * half + start + w // 2] = RED_YUV[2]
            if fmt == "NV12":  # one plane of U, V pairs, (h/2) x stride
                uv = rows[h:, :w].reshape(h // 2, w // 2, 2)
                uv[..., 0], uv[..., 1] = RED_YUV[1], RED_YUV[2]
            return rows.reshape(-1)
        if fmt == "RGB888":  # stored B, G, R per pixel: red is [0, 0, 255] in memory
            rows = np.full((h, stride), 255, np.uint8)
            pixels = rows[:, : w * 3].reshape(h, w, 3)
            pixels[...] = (0, 0, 255)
            pixels[:, band_at, 1] = 128
            return rows.reshape(-1)
        raise ValueError(f"the fake cannot film {fmt}")

    def get_metadata(self) -> dict[str, Any]:
        return {"SensorTimestamp": self._taken_ns, "FrameDuration": 33_333}

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._camera.outstanding -= 1


class Transform:
    """libcamera's Transform, as far as the appliance uses it."""

    def __init__(self, hflip: bool = False, vflip: bool = False) -> None:
        self.hflip, self.vflip = hflip, vflip


class FakePicamera2:
    """Class-level ``cameras`` lists what ``global_camera_info`` reports; tests set it, and
    ``answer_format`` (the format ``configure`` gives every stream, None: as asked), ``pad`` (bytes
    of padding per row), ``fail_start`` and ``stall``."""

    cameras: list[dict[str, Any]] = [
        {"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0}]
    instances: list[FakePicamera2] = []
    stall = threading.Event()
    answer_format: str | None = None
    pad = 64
    fail_start: Exception | None = None
    refuse_transform = False
    camera_controls: dict[str, Any] = {  # as picamera2 lists an imx708's: (min, max, default)
        "Brightness": (-1.0, 1.0, 0.0), "Contrast": (0.0, 32.0, 1.0), "Saturation": (0.0, 32.0, 1.0),
        "Sharpness": (0.0, 16.0, 1.0), "ExposureValue": (-8.0, 8.0, 0.0), "ExposureTime": (26, 112015443, 20000),
        "AnalogueGain": (1.1228070259094238, 16.0, None), "AeEnable": (False, True, None),
        "AwbEnable": (False, True, None), "AwbMode": (0, 7, 0), "FrameDurationLimits": (33333, 120000000, None)}

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num >= len(self.cameras):
            raise IndexError("list index out of range")
        self.camera_num = camera_num
        self.configuration: dict[str, Any] = {}
        self.started = False
        self.closed = False
        self.outstanding = 0
        self._index = 0
        self.controls_set: list[dict[str, Any]] = []
        self._next_due = 0.0
        self._paced = threading.Event()  # never set: its wait() is the sensor's frame time
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return list(FakePicamera2.cameras)

    def create_video_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                   raw: Any = None, buffer_count: int = 6, controls: dict[str, Any] | None = None,
                                   transform: Any = None, **_: Any) -> dict[str, Any]:
        main = dict(main or {})
        main.setdefault("format", "XBGR8888")
        main.setdefault("size", (1280, 720))
        if lores is not None:
            lores = dict(lores)
            lw, lh = lores["size"]
            assert lw <= main["size"][0] and lh <= main["size"][1], "lores may not exceed main"
        return {"use_case": "video", "main": main, "lores": lores, "raw": raw, "buffer_count": buffer_count,
                "controls": dict(controls or {}), "transform": transform}

    @staticmethod
    def align_configuration(config: dict[str, Any], optimal: bool = True) -> None:
        """As picamera2: widths to 32 px (RGB888) or 64 px (YUV420) when optimal, heights even."""
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is None:
                continue
            align = (64 if stream["format"] in ("YUV420", "YVU420") else 32) if optimal else 2
            w, h = stream["size"]
            stream["size"] = (w - w % align, h - h % 2)

    def stream_configuration(self, name: str = "main") -> dict[str, Any]:
        return self.configuration[name]

    def camera_configuration(self) -> dict[str, Any]:
        return self.configuration

    def set_controls(self, controls: dict[str, Any]) -> None:
        self.controls_set.append(dict(controls))

    def configure(self, config: dict[str, Any]) -> None:
        assert not self.started, "configure while running"
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is not None:
                stream["format"] = self.answer_format or stream["format"]
                stream["stride"] = _stride(stream["format"], stream["size"][0], self.pad)
                rows = stream["size"][1] * (3 if stream["format"] in ("YUV420", "NV12") else 2) // 2
                stream["framesize"] = stream["stride"] * rows
        if self.refuse_transform:  # as libcamera's virtual camera: orientation adjusted back to none
            config["transform"] = Transform()
        self.configuration = config

    def start(self) -> None:
        assert self.configuration, "start before configure"
        if FakePicamera2.fail_start is not None:
            raise FakePicamera2.fail_start
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.started = False
        self.closed = True

    def capture_request(self, wait: Any = None, signal_function: Any = None, flush: Any = None) -> FakeRequest:
        assert self.started, "capture_request on a stopped camera"
        if FakePicamera2.stall.is_set():
            # The real one raises TimeoutError from Future.result(timeout=wait).
            raise TimeoutError()
        # Like a sensor, it delivers at the FrameRate it was configured with: the call waits for the frame.
        rate = float(self.configuration.get("controls", {}).get("FrameRate", 30.0))
        due, now = self._next_due, time.monotonic()
        if due > now:
            self._paced.wait(min(due - now, float(wait) if isinstance(wait, int | float) else due - now))
        self._next_due = max(due, now) + 1.0 / rate
        self._index += 1
        self.outstanding += 1
        return FakeRequest(self, self._index)
