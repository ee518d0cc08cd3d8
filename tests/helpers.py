"""Test helpers: configs, backends with counters and faults, MJPEG parsing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import requests

from appliance.camera_backends.base import CameraBackend, CameraError, Frame
from appliance.camera_backends.synthetic import SyntheticCamera
from appliance.config import AppConfig, CameraSettings


def make_config(tmp_path: Any, **sections: Any) -> AppConfig:
    """A small, fast config on a free loopback port with its own state folder."""
    tree: dict[str, Any] = {
        "camera": {"backend": "synthetic", "size": "320x240", "fps": 20, "read_timeout": 2.0,
                   "synthetic": {"objects": 0}},
        "server": {"host": "127.0.0.1", "port": 0, "socket_timeout": 3},
        "retry": {"initial": 0.05, "maximum": 0.2},
        "state_dir": str(tmp_path / "state"),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = _merge(tree[key], value)
        else:
            tree[key] = value
    return AppConfig.model_validate(tree)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class CountingCamera(CameraBackend):
    """A synthetic camera that counts opens and closes and fails on demand.

    ``broken`` set: open() and read() raise CameraError, as an unplugged USB camera does.
    """

    name = "counting"

    def __init__(self, settings: CameraSettings) -> None:
        self._inner = SyntheticCamera(settings)
        self._lock = threading.Lock()
        self.opens = 0
        self.closes = 0
        self.is_open = False
        self.broken = threading.Event()

    def open(self) -> None:
        if self.broken.is_set():
            raise CameraError("device not found (test)")
        with self._lock:
            assert not self.is_open, "opened twice without a close"
            self.opens += 1
            self.is_open = True
        self._inner.open()

    def read(self, timeout: float) -> Frame:
        if self.broken.is_set():
            raise CameraError("device unplugged (test)")
        return self._inner.read(timeout)

    def close(self) -> None:
        self._inner.close()
        with self._lock:
            if self.is_open:
                self.closes += 1
                self.is_open = False


def iter_mjpeg(response: requests.Response) -> Iterator[tuple[dict[str, str], bytes]]:
    """Parse a multipart/x-mixed-replace body part by part, checking the framing strictly."""
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    raw = response.raw
    while True:
        line = raw.readline()
        if not line:
            return
        if line.strip() == b"":
            continue
        assert line.strip() == b"--" + boundary, f"expected boundary, got {line[:80]!r}"
        headers: dict[str, str] = {}
        while True:
            header = raw.readline()
            if header in (b"\r\n", b"\n"):
                break
            if not header:
                return
            name, _, value = header.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        body = raw.read(length)
        assert len(body) == length
        assert raw.read(2) == b"\r\n"
        yield headers, body


def decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image
