"""Camera backends, chosen by name and imported only when chosen.

A machine without picamera2 never imports it: the registry maps names to ``"module:Class"`` strings,
and ``auto`` probes each candidate without failing when its library is missing.
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

__all__ = ["BACKENDS", "CameraBackend", "CameraError", "Frame", "backend_class", "choose_backend"]


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


def choose_backend(settings: CameraSettings) -> tuple[str, CameraBackend]:
    """Build the configured backend; ``auto`` means Pi camera, else first V4L2 camera, else synthetic."""
    name = settings.backend
    if name == "auto":
        name = next((n for n in ("picamera2", "opencv") if _probe(n, settings)), "synthetic")
        log.info("camera backend auto-selected: %s", name)
    backend = backend_class(name)(settings)
    log.info("camera: %s", backend.describe())
    return name, backend
