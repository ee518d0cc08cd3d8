"""A demo camera that needs no hardware: a textured scene, moving objects and a clock.

Objects move for ``motion_duration`` seconds of every ``motion_period`` seconds and stand still the
rest of the time, so motion detection has events that start *and* end. Scene time advances one frame
period per frame, so with a fixed seed the same frame index gives the same picture (the clock text,
drawn from the injected wall clock, is the only part that depends on real time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.camera_backends.base import CameraBackend, CameraError, Control, ControlValue, Frame
from appliance.config import CameraSettings


@dataclass(frozen=True)
class _Thing:
    x: float
    y: float
    vx: float
    vy: float
    radius: int
    colour: tuple[int, int, int]
    square: bool


def _bounce(position: float, low: float, high: float) -> float:
    """Fold an unbounded coordinate into [low, high] as if bouncing off the edges."""
    span = high - low
    if span <= 0:
        return low
    folded = (position - low) % (2 * span)
    return low + (folded if folded <= span else 2 * span - folded)


CONTROLS = {control.name: control for control in (
    Control("brightness", -1.0, 1.0, 0.0, 0.05),
    Control("contrast", 0.0, 4.0, 1.0, 0.05),
    Control("saturation", 0.0, 4.0, 1.0, 0.05),
    Control("gain", 0.0, 16.0, 0.0, 0.1, unit="x, 0: automatic"),
    Control("exposure_compensation", -4.0, 4.0, 0.0, 0.25, unit="EV"),
    Control("white_balance", choices=("auto", "daylight", "cloudy", "indoor"), default="auto"),
)}
"""What the demo camera offers, applied in software to each frame so the effect is there to see."""
_WHITE = {"auto": (1.0, 1.0, 1.0), "daylight": (1.0, 1.0, 1.0), "cloudy": (0.85, 1.0, 1.15),
          "indoor": (1.2, 1.0, 0.8)}  # B, G, R gains: cloudy warms the picture, indoor cools it


def adjust(image: np.ndarray, values: dict[str, ControlValue]) -> np.ndarray:
    """``image`` as a camera with these control values would film it."""
    gain = float(values.get("gain", 0.0)) or 1.0
    scale = gain * 2.0 ** float(values.get("exposure_compensation", 0.0)) * float(values.get("contrast", 1.0))
    offset = 128.0 * (1.0 - float(values.get("contrast", 1.0))) + 100.0 * float(values.get("brightness", 0.0))
    picture = image.astype(np.float32) * scale + offset
    saturation = float(values.get("saturation", 1.0))
    if saturation != 1.0:
        grey = picture.mean(axis=2, keepdims=True)
        picture = grey + (picture - grey) * saturation
    white = _WHITE[str(values.get("white_balance", "auto"))]
    if white != (1.0, 1.0, 1.0):
        picture *= np.array(white, np.float32)
    return np.clip(picture, 0, 255).astype(np.uint8)


class SyntheticCamera(CameraBackend):
    """Deterministic moving scene, paced at the configured frame rate."""

    name = "synthetic"

    def __init__(
        self,
        settings: CameraSettings,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        paced: bool = True,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._paced = paced
        self._closed = threading.Event()
        self._closed.set()
        self._controls: dict[str, ControlValue] = {}  # the ones away from their default
        self._width, self._height = settings.size
        self._background = self._make_background()
        self._things = self._make_things()
        self._index = 0
        self._next_due = 0.0
        self._still: tuple[float, str, np.ndarray] | None = None

    @staticmethod
    def detect(settings: CameraSettings) -> bool:
        """The demo camera is always available."""
        return True

    def describe(self) -> str:
        return f"synthetic demo camera {self._width}x{self._height} @ {self._settings.fps:g} fps"

    def _make_background(self) -> np.ndarray:
        w, h = self._width, self._height
        ramp_x = np.linspace(40, 110, w, dtype=np.float32)
        ramp_y = np.linspace(30, 90, h, dtype=np.float32)[:, None]
        base = np.empty((h, w, 3), np.uint8)
        base[..., 0] = (ramp_x + ramp_y * 0.6).astype(np.uint8)
        base[..., 1] = (ramp_y + 20).astype(np.uint8)
        base[..., 2] = (ramp_x * 0.5 + 30).astype(np.uint8)
        step = max(16, w // 20)
        base[::step, :, :] = 140
        base[:, ::step, :] = 140
        return base

    def _make_things(self) -> list[_Thing]:
        rng = np.random.default_rng(self._settings.synthetic.seed)
        w, h = self._width, self._height
        things = []
        for _ in range(self._settings.synthetic.objects):
            radius = int(rng.integers(max(6, h // 20), max(7, h // 8)))
            speed = float(rng.uniform(0.15, 0.35)) * w  # pixels per second of motion
            angle = float(rng.uniform(0, 2 * np.pi))
            colour = tuple(int(c) for c in rng.integers(120, 256, 3))
            things.append(_Thing(float(rng.uniform(radius, w - radius)), float(rng.uniform(radius, h - radius)),
                                 speed * np.cos(angle), speed * np.sin(angle), radius,
                                 colour, bool(rng.integers(0, 2))))
        return things

    def _moving_time(self, scene_time: float) -> float:
        """Seconds the objects have moved by ``scene_time``: they move only in each period's first part."""
        period = self._settings.synthetic.motion_period
        duration = self._settings.synthetic.motion_duration
        cycles, into = divmod(scene_time, period)
        return cycles * duration + min(into, duration)

    def is_moving(self, index: int) -> bool:
        """Whether the objects move in frame ``index`` (for tests that need to know the ground truth)."""
        into = (index / self._settings.fps) % self._settings.synthetic.motion_period
        return into < self._settings.synthetic.motion_duration

    def render(self, index: int) -> np.ndarray:
        """The scene of frame ``index`` without the clock: a pure function of the seed and the index."""
        image = self._background.copy()
        moved = self._moving_time(index / self._settings.fps)
        for thing in self._things:
            x = int(_bounce(thing.x + thing.vx * moved, thing.radius, self._width - thing.radius))
            y = int(_bounce(thing.y + thing.vy * moved, thing.radius, self._height - thing.radius))
            if thing.square:
                r = thing.radius
                cv2.rectangle(image, (x - r, y - r), (x + r, y + r), thing.colour, -1)
            else:
                cv2.circle(image, (x, y), thing.radius, thing.colour, -1, cv2.LINE_AA)
        return image

    def _draw_clock(self, image: np.ndarray, text: str) -> None:
        scale = self._height / 1200
        cv2.putText(image, text, (self._width - int(self._width * 0.2), self._height - 10),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (230, 230, 230), 1, cv2.LINE_AA)

    def controls(self) -> dict[str, Control]:
        return CONTROLS

    def set_controls(self, values: Mapping[str, ControlValue]) -> None:
        self._controls = {name: CONTROLS[name].check(value) for name, value in values.items()
                          if value != CONTROLS[name].default}

    def open(self) -> None:
        self._closed.clear()
        self._next_due = self._monotonic()

    def read(self, timeout: float) -> Frame:
        if self._closed.is_set():
            raise CameraError("synthetic camera is closed")
        if self._paced:
            delay = self._next_due - self._monotonic()
            if delay > timeout:
                raise CameraError(f"no frame within {timeout:.2f} s")
            if delay > 0 and self._closed.wait(delay):
                raise CameraError("synthetic camera was closed while reading")
            period = 1.0 / self._settings.fps
            # Do not build up a debt of frames after a stall: schedule from now if far behind.
            self._next_due = max(self._next_due + period, self._monotonic() - period)
        index = self._index
        self._index += 1
        now = self._clock()
        text = time.strftime("DEMO %H:%M:%S", time.localtime(now))
        moved = self._moving_time(index / self._settings.fps)
        if index > 0 and moved == self._moving_time((index - 1) / self._settings.fps):
            # The scene is still: a frame costs one copy of the picture, as a real capture does (the
            # consumer draws its overlay on its own copy); a new picture only when the clock ticks.
            still = self._still
            if still is None or still[0] != moved or still[1] != text:
                picture = self.render(index)
                self._draw_clock(picture, text)
                self._still = still = (moved, text, picture)
            image = still[2].copy()
        else:
            image = self.render(index)
            self._draw_clock(image, text)
        return Frame(image=adjust(image, self._controls) if self._controls else image, timestamp=now)

    def close(self) -> None:
        self._closed.set()
