"""The contract every camera backend keeps.

A backend is a plain object with three duties, all called from one thread, the capture thread that
reads it: nothing else ever calls ``close()`` while a ``read()`` is pending (libraries such as OpenCV
do not allow it). The capture loop treats *any* exception from these calls as a camera failure and
retries, but a backend should say what went wrong with ``CameraError``.

Subclasses **must** override:

- ``open()``: acquire the device and start streaming. Raises ``CameraError`` if the device is absent,
  busy or refuses the requested mode. Returns once frames can be read, and within
  ``camera.open_timeout`` (a backend whose library can hang does the work on a thread it can abandon).
- ``read(timeout)``: block until the next frame and return it as a ``Frame``. Raises ``CameraError``
  when no frame arrives within ``timeout`` seconds or the device fails (unplugged, stream ended).
  The timeout is a promise, tested for every backend with a source that stalls. Must never spin:
  it waits on the device or an event.
- ``close()``: release the device. Safe to call twice and on a backend that never opened; returns
  promptly even if the device hangs.

Subclasses **may** override ``describe()`` (a human-readable line for logs and the page), and offer
picture controls: ``controls()`` says which (names from ``CONTROL_NAMES``, each with its range or
choices) and ``set_controls(values)`` applies them on the next frames, called from the reading
thread like the rest; ``orient(rotation, hflip, vflip)``, called before ``open()``, takes the part of
the orientation the camera does itself (libcamera flips for free) and returns what is left for the
capture thread to do. Backends are context managers: ``with backend:`` opens and closes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from appliance.camera_backends.yuv import I420


class CameraError(Exception):
    """The camera cannot deliver frames: absent, busy, unplugged, timed out or at end of stream."""


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``image`` is a BGR ``uint8`` array of shape ``(height, width, 3)`` (OpenCV's byte order), or, from
    a camera that delivers YUV 4:2:0 (the Pi camera), an ``I420`` picture kept in its planes: the
    capture thread works on either as it is, and converts only for what takes BGR alone.
    ``gray`` is an optional small single-channel ``uint8`` image the backend gets for free (the
    Pi camera's lores Y plane); motion detection uses it instead of converting ``image``.
    ``timestamp`` is ``time.time()`` at capture, for the overlay and motion events.
    """

    image: np.ndarray | I420
    timestamp: float
    gray: np.ndarray | None = field(default=None)


CONTROL_NAMES = ("brightness", "contrast", "saturation", "sharpness", "exposure_time", "gain",
                 "exposure_compensation", "white_balance")
"""The picture controls the appliance knows, whatever the camera calls them. ``exposure_time`` (µs)
and ``gain`` take 0 for automatic; ``white_balance`` is a choice (``auto``, ``daylight``, ...)."""

ControlValue = float | str


@dataclass(frozen=True)
class Control:
    """A picture control a camera offers: a number from ``minimum`` to ``maximum``, or one of ``choices``."""

    name: str
    minimum: float = 0.0
    maximum: float = 0.0
    default: ControlValue = 0.0
    step: float = 0.0
    choices: tuple[str, ...] = ()
    unit: str = ""

    def check(self, value: object) -> ControlValue:
        """``value`` as this control takes it; ValueError saying what it accepts when it does not."""
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}")
            return str(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{self.name} must be a number, not {value!r}")
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{self.name} must be from {self.minimum:g} to {self.maximum:g}, not {value:g}")
        return float(value)

    def public(self) -> dict[str, object]:
        """As the API and the page show it."""
        if self.choices:
            return {"kind": "choice", "choices": list(self.choices), "default": self.default}
        return {"kind": "number", "minimum": self.minimum, "maximum": self.maximum, "step": self.step,
                "default": self.default, "unit": self.unit}


class CameraBackend(ABC):
    """Abstract camera: see the module docstring for what each method promises."""

    name: str = "abstract"

    @abstractmethod
    def open(self) -> None:
        """Acquire the device and start streaming; raise CameraError on failure."""

    @abstractmethod
    def read(self, timeout: float) -> Frame:
        """Return the next frame within ``timeout`` seconds or raise CameraError."""

    @abstractmethod
    def close(self) -> None:
        """Release the device; idempotent."""

    def describe(self) -> str:
        """A line saying which camera this is, shown in logs and on the page."""
        return self.name

    def controls(self) -> Mapping[str, Control]:
        """The picture controls this camera offers now (none by default)."""
        return {}

    def set_controls(self, values: Mapping[str, ControlValue]) -> None:
        """Apply ``values`` (checked against ``controls()``) from the next frames on; the whole set
        wanted, not a change: a control left out goes back to its default."""
        if values:
            raise NotImplementedError(f"{self.name} offers no controls")

    def orient(self, rotation: int, hflip: bool, vflip: bool) -> tuple[int, bool, bool]:
        """Take what of the orientation this camera does itself; return the rest (all, by default)."""
        return rotation, hflip, vflip

    def __enter__(self) -> CameraBackend:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
