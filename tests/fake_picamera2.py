"""A stand-in for picamera2 that follows its documented API, for machines without libcamera.

What it keeps faithful: ``Picamera2.global_camera_info()`` is static and ``[]`` without cameras;
``create_video_configuration(main=..., lores=..., buffer_count=..., controls=...)``;
``align_configuration`` (YUV420 widths to 64 px) and ``stream_configuration(name)``; ``configure``,
``start``, ``stop``, ``close``; ``capture_request(wait=seconds)`` raising ``TimeoutError`` when no
frame comes; a request's ``make_array("main")`` for RGB888 is **BGR** in memory with shape
``(h, w, 3)``; ``make_array("lores")`` for YUV420 has shape ``(h * 3 // 2, stride)`` with the Y plane
in ``[:h, :w]``; every request must be ``release()``d (counted here).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class FakeRequest:
    def __init__(self, camera: FakePicamera2, index: int) -> None:
        self._camera = camera
        self._index = index
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        assert not self.released, "array made from a released request"
        config = self._camera.configuration
        if name == "main":
            assert config["main"]["format"] == "RGB888"
            w, h = config["main"]["size"]
            # "RGB888" is stored B, G, R per pixel: a red scene is [0, 0, 255] in memory.
            array = np.zeros((h, w, 3), np.uint8)
            array[..., 2] = 255
            array[:, : (self._index * 8) % w or 1, 1] = 128  # a band that grows frame by frame
            return array
        if name == "lores":
            assert config["lores"]["format"] == "YUV420"
            w, h = config["lores"]["size"]
            stride = (w + 63) // 64 * 64  # libcamera pads rows; stride may exceed width
            array = np.full((h * 3 // 2, stride), 0, np.uint8)
            array[:h, :w] = 76  # luma of pure red
            array[:h, w:] = 255  # padding garbage that must never reach the detector
            array[h:, :] = 200  # chroma planes, likewise
            return array
        raise ValueError(f"no stream named {name}")

    def get_metadata(self) -> dict[str, Any]:
        return {"SensorTimestamp": self._index * 33_333_333, "FrameDuration": 33_333}

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._camera.outstanding -= 1


class FakePicamera2:
    """Class-level ``cameras`` lists what ``global_camera_info`` reports; tests set it."""

    cameras: list[dict[str, Any]] = [
        {"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0}]
    instances: list[FakePicamera2] = []
    stall = threading.Event()

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num >= len(self.cameras):
            raise IndexError("list index out of range")
        self.camera_num = camera_num
        self.configuration: dict[str, Any] = {}
        self.started = False
        self.closed = False
        self.outstanding = 0
        self._index = 0
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return list(FakePicamera2.cameras)

    def create_video_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                   buffer_count: int = 6, controls: dict[str, Any] | None = None,
                                   **_: Any) -> dict[str, Any]:
        main = dict(main or {})
        main.setdefault("format", "XBGR8888")
        main.setdefault("size", (1280, 720))
        if lores is not None:
            lores = dict(lores)
            lw, lh = lores["size"]
            assert lw <= main["size"][0] and lh <= main["size"][1], "lores may not exceed main"
        return {"use_case": "video", "main": main, "lores": lores, "buffer_count": buffer_count,
                "controls": dict(controls or {})}

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

    def configure(self, config: dict[str, Any]) -> None:
        assert not self.started, "configure while running"
        self.configuration = config

    def start(self) -> None:
        assert self.configuration, "start before configure"
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
        self._index += 1
        self.outstanding += 1
        return FakeRequest(self, self._index)
