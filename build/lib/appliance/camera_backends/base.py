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

Subclasses **may** override ``describe()`` (a human-readable line for logs and the page).
Backends are context managers: ``with backend:`` opens and closes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


class CameraError(Exception):
    """The camera cannot deliver frames: absent, busy, unplugged, timed out or at end of stream."""


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``image`` is a BGR ``uint8`` array of shape ``(height, width, 3)`` (OpenCV's byte order).
    ``gray`` is an optional small single-channel ``uint8`` image the backend gets for free (the
    Pi camera's lores Y plane); motion detection uses it instead of converting ``image``.
    ``timestamp`` is ``time.time()`` at capture, for the overlay and motion events.
    """

    image: np.ndarray
    timestamp: float
    gray: np.ndarray | None = field(default=None)


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

    def __enter__(self) -> CameraBackend:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
