"""The picture itself: orientation, privacy masks, night mode and the camera's controls.

All of it happens on the capture thread, to each frame as it arrives and before anything else sees
it, so every output agrees: motion, the overlay, the stream, snapshots, event snapshots, clips and
MQTT all get the frame the right way up, with the masked areas already black.

- **Orientation** (``camera.rotation``, ``hflip``, ``vflip``): the backend takes what its camera does
  for free (libcamera flips and turns 180° in the ISP); the rest is done here, once per frame, to the
  picture and to the backend's grey image alike. Flips come first, then the rotation, clockwise.
- **Privacy masks**: polygons in fractions of the oriented picture, filled black in the picture and
  in the grey image motion is detected on, so nothing inside them is ever shown, stored or detected.
- **Night mode**: ``on``, ``off``, or ``auto`` by the scene's mean brightness, with two limits and a
  hold time so dusk does not make it flap. While on, the picture may be grey (an infrared-lit scene
  has no true colour; the grey keeps the brightness the motion detector sees); listeners drive an
  IR-cut filter or IR LEDs (``panel``), MQTT and the page.
- **Controls** (brightness, exposure, white balance, ...): what the backend offers, checked here and
  applied by the backend on the next frames.

``PictureControl`` owns the settings that change at run time and keeps them in ``picture.json``, as
``MotionControl`` does for motion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.camera_backends.base import Control, ControlValue
from appliance.camera_backends.yuv import I420, fill_polygons, grey, oriented, size_of
from appliance.config import Mask, PictureSettings
from appliance.durable import KeptSettings

log = logging.getLogger(__name__)

RUNTIME_KEYS = ("controls", "night_mode", "masks")
"""What is changed at run time and kept across restarts; the rest comes from the config file."""


def orient(image: np.ndarray | I420, rotation: int, hflip: bool, vflip: bool) -> np.ndarray | I420:
    """``image`` flipped, then turned ``rotation`` degrees clockwise (a new array unless nothing changes)."""
    if isinstance(image, I420):
        return oriented(image, rotation, hflip, vflip) if rotation or hflip or vflip else image
    if hflip or vflip:
        image = cv2.flip(image, -1 if hflip and vflip else 1 if hflip else 0)
    if rotation == 90:
        image = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    elif rotation == 180:
        image = cv2.rotate(image, cv2.ROTATE_180)
    elif rotation == 270:
        image = cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


class MaskPainter:
    """Fills the privacy masks black, with the pixel polygons worked out once per mask list and size."""

    def __init__(self) -> None:
        self._size: tuple[int, int] | None = None
        self._polygons: list[np.ndarray] = []
        self._masks: Sequence[Mask] = ()

    def paint(self, image: np.ndarray | I420, masks: Sequence[Mask]) -> None:
        """Black out ``masks`` in ``image`` (BGR, grey or I420), in place."""
        if not masks:
            return
        width, height = size_of(image)
        if masks is not self._masks or (width, height) != self._size:  # new settings make a new list
            self._polygons = [np.array([(round(x * (width - 1)), round(y * (height - 1))) for x, y in mask.points],
                                       np.int32) for mask in masks]
            self._size, self._masks = (width, height), masks
        if isinstance(image, I420):
            fill_polygons(image, self._polygons, (0, 0, 0))
        else:
            cv2.fillPoly(image, self._polygons, 0 if image.ndim == 2 else (0, 0, 0))


class NightSwitch:
    """Decides night mode: fixed ``on``/``off``, or ``auto`` by brightness with hysteresis and a hold."""

    def __init__(self) -> None:
        self.active = False
        self._since: float | None = None  # when the brightness first crossed the limit it is past now

    def update(self, settings: PictureSettings, brightness: float | None, now: float) -> bool:
        """The state for this moment (``now`` on the monotonic clock); ``brightness`` None: not measured."""
        if settings.night_mode != "auto":
            self.active, self._since = settings.night_mode == "on", None
            return self.active
        if brightness is None:
            return self.active
        crossing = brightness > settings.night_above if self.active else brightness < settings.night_below
        if not crossing:
            self._since = None
        elif self._since is None:
            self._since = now
        if crossing and self._since is not None and now - self._since >= settings.night_hold:
            self.active, self._since = not self.active, None
            log.info("night mode %s (mean brightness %.0f)", "on" if self.active else "off", brightness)
        return self.active


class PictureSettingsError(ValueError):
    """A change that cannot be applied; the message says which key and why."""


def public(settings: PictureSettings, offered: Mapping[str, Control], night_active: bool,
           orientation: tuple[int, bool, bool]) -> dict[str, Any]:
    """The picture settings as the API, the page and MQTT show them."""
    rotation, hflip, vflip = orientation
    return {"controls": dict(settings.controls),
            "offered": {name: control.public() for name, control in offered.items()},
            "night_mode": settings.night_mode, "night_active": night_active, "night_grey": settings.night_grey,
            "masks": [mask.model_dump() for mask in settings.masks],
            "orientation": {"rotation": rotation, "hflip": hflip, "vflip": vflip}}


class PictureControl(KeptSettings[PictureSettings]):
    """Owns the picture settings changed at run time and the night state; every way in calls
    ``update`` (``controls``, merged: a null value restores that control's default; ``night_mode``;
    ``masks``, replaced), every listener hears ``(settings, night_active)``."""

    ACCEPTED = KEPT = RUNTIME_KEYS
    WHAT = "picture settings"
    REFUSED = PictureSettingsError

    def __init__(self, initial: PictureSettings, path: Path | None,
                 offered: Callable[[], Mapping[str, Control]] = dict) -> None:
        self._offered = offered
        self._night_active = False
        super().__init__(initial, path)

    @property
    def night_active(self) -> bool:
        return self._night_active

    def offered(self) -> Mapping[str, Control]:
        return self._offered()

    def check_controls(self) -> None:
        """Raise PictureSettingsError when the settings name a control the camera does not offer."""
        self._checked_controls(self._settings.controls)

    def set_night_active(self, active: bool) -> None:
        """The capture thread's news: night mode switched."""
        if active != self._night_active:
            self._night_active = active
            self._tell()

    def _settled(self, settings: PictureSettings) -> None:
        """Night mode set ``on`` or ``off`` is on or off from now: the answer to the change, the output
        and every listener say so at once, not only once the capture thread's next frame agrees
        (which it does; with the camera off, the IR output follows the setting all the same)."""
        if settings.night_mode != "auto":
            self._night_active = settings.night_mode == "on"

    def _news(self) -> tuple[PictureSettings, bool]:
        return self._settings, self._night_active

    def _checked_controls(self, controls: Mapping[str, object]) -> dict[str, ControlValue]:
        offered = self._offered()
        missing = sorted(set(controls) - set(offered))
        if missing:
            have = ", ".join(sorted(offered)) or "none"
            raise PictureSettingsError(f"this camera does not offer {', '.join(missing)} (it offers: {have})")
        checked = {}
        for name, value in controls.items():
            try:
                checked[name] = offered[name].check(value)
            except ValueError as exc:
                raise PictureSettingsError(f"controls.{exc}") from None
        return checked

    def _prepared(self, current: PictureSettings, values: dict[str, Any]) -> dict[str, Any]:
        if "controls" in values:
            wanted = values["controls"]
            if not isinstance(wanted, dict):
                raise PictureSettingsError(f"'controls' must be an object of name: value, not {wanted!r}")
            merged = {**current.controls, **wanted}
            values["controls"] = self._checked_controls({name: value for name, value in merged.items()
                                                         if value is not None})
        return values


class PictureStage:
    """The capture thread's per-frame work for the picture: orient, mask, night mode, grey."""

    BRIGHTNESS_EVERY = 0.5  # s between brightness measurements for night mode's auto

    def __init__(self, orientation: tuple[int, bool, bool]) -> None:
        self.orientation = orientation  # what is left after the backend took its part
        self._masks = MaskPainter()
        self._gray_masks = MaskPainter()
        self.night = NightSwitch()
        self._measured_at: float | None = None

    def apply(self, image: np.ndarray | I420, gray: np.ndarray | None, settings: PictureSettings,
              now: float) -> tuple[np.ndarray | I420, np.ndarray | None]:
        """The frame's picture and grey image as every consumer must see them."""
        rotation, hflip, vflip = self.orientation
        if rotation or hflip or vflip:
            image = orient(image, rotation, hflip, vflip)
            if gray is not None:
                gray = np.ascontiguousarray(orient(gray, rotation, hflip, vflip))
        brightness = None
        if settings.night_mode == "auto" and (self._measured_at is None
                                              or now - self._measured_at >= self.BRIGHTNESS_EVERY):
            self._measured_at = now  # the scene as filmed: masks are not the night
            brightness = cv2.mean(gray if gray is not None else image.y if isinstance(image, I420)
                                  else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[0]
        night = self.night.update(settings, brightness, now)
        if settings.masks:
            if isinstance(image, np.ndarray) and not image.flags.writeable:
                image = image.copy()
            self._masks.paint(image, settings.masks)
            if gray is not None:
                self._gray_masks.paint(gray, settings.masks)
        if night and settings.night_grey:
            if isinstance(image, I420):
                grey(image)  # the frame's own copy, taken out of the camera's buffer
            else:
                image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        return image, gray
