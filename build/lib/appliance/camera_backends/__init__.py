"""Camera backends, chosen by name and imported only when chosen.

A machine without picamera2 never imports it: the registry maps names to ``"module:Class"`` strings,
and ``auto`` probes each candidate without failing when its library is missing.

``auto`` picks only real cameras. When none is found it does **not** fall back to the demo scene: a
deployed camera whose ribbon cable came loose must say so (``error``, with the reason, on the page,
in the API and over MQTT), not show fake motion. The demo camera runs only when chosen by name.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from appliance.camera_backends.base import CameraBackend, CameraError, Frame
from appliance.config import CameraSettings

log = logging.getLogger(__name__)

BACKENDS: dict[str, str] = {
    "synthetic": "appliance.camera_backends.synthetic:SyntheticCamera",
    "opencv": "appliance.camera_backends.opencv:OpenCVCamera",
    "picamera2": "appliance.camera_backends.pi_camera:PiCamera",
}

__all__ = ["BACKENDS", "CameraBackend", "CameraError", "Frame", "MissingCamera", "backend_class", "choose_backend",
           "detect_camera"]

NO_CAMERA = ("no camera found: libcamera lists no Pi camera and there is no readable /dev/video* device; "
             "check the cable, or set camera.backend: synthetic for the demo camera")


class MissingCamera(CameraBackend):
    """What ``auto`` gives when no camera is attached: every open fails with the reason, and the
    capture loop keeps retrying, so a camera plugged in later is found by a restart of the service."""

    name = "none"

    def __init__(self, reason: str = NO_CAMERA) -> None:
        self._reason = reason

    def open(self) -> None:
        raise CameraError(self._reason)

    def read(self, timeout: float) -> Frame:
        raise CameraError(self._reason)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "no camera found"


def backend_class(name: str) -> type[CameraBackend]:
    """Import and return the backend class registered as ``name``."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown camera backend {name!r}; choose from {', '.join(BACKENDS)}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def _probe(name: str, settings: CameraSettings) -> bool:
    try:
        cls = backend_class(name)
    except ImportError as exc:
        log.debug("camera backend %s unavailable: %s", name, exc)
        return False
    probe: Callable[[CameraSettings], bool] | None = getattr(cls, "detect", None)
    try:
        return bool(probe and probe(settings))
    except Exception as exc:  # a probe must never stop start-up
        log.debug("probing camera backend %s failed: %s", name, exc)
        return False


def detect_camera(settings: CameraSettings) -> str | None:
    """The real camera ``auto`` would use (``picamera2`` before ``opencv``), or None."""
    return next((name for name in ("picamera2", "opencv") if _probe(name, settings)), None)


def choose_backend(settings: CameraSettings) -> tuple[str, CameraBackend]:
    """Build the configured backend; ``auto`` means the Pi camera, else the first V4L2 camera, else none."""
    name = settings.backend
    if name == "auto":
        found = detect_camera(settings)
        if found is None:
            log.error("%s", NO_CAMERA)
            return MissingCamera.name, MissingCamera()
        name = found
        log.info("camera backend auto-selected: %s", name)
    backend = backend_class(name)(settings)
    log.info("camera: %s", backend.describe())
    return name, backend
