"""What is drawn on the streamed picture: a timestamp and the motion boxes, each switchable.

Drawn on whatever the picture is: a BGR image (OpenCV's cameras, the demo camera) or the planes of an
``I420`` picture (the Pi camera), where lines and boxes go onto each plane in the colour's Y, Cb and
Cr (the chroma planes at half size) and the text onto the few pixels it covers. Both look the same.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from appliance.camera_backends.yuv import I420, size_of, ycbcr
from appliance.config import OverlaySettings, Zone
from appliance.motion.events import MotionResult

FONT = cv2.FONT_HERSHEY_SIMPLEX
ZONE_WATCHED = (0, 255, 255)  # BGR: yellow
ZONE_IGNORED = (160, 160, 160)
BOX = (0, 0, 255)  # red


def draw_overlay(image: np.ndarray | I420, timestamp: float, motion: MotionResult | None,
                 settings: OverlaySettings, scale: tuple[float, float] = (1.0, 1.0),
                 zones: Sequence[Zone] = ()) -> None:
    """Draw in place on ``image`` (BGR or I420); sizes scale with the frame so 320x240 and 1080p both read.

    Boxes are in capture-frame pixels; ``scale`` maps them onto a scaled-down stream frame. Zones are
    in fractions of the frame: outlined, grey where motion is ignored, yellow where it is watched.
    """
    width, height = size_of(image)
    thickness = max(1, height // 360)
    sx, sy = scale
    if settings.zones:
        for zone in zones:
            points = np.array([[round(x * (width - 1)), round(y * (height - 1))] for x, y in zone.points], np.int32)
            colour = ZONE_WATCHED if zone.mode == "include" else ZONE_IGNORED
            _draw(image, colour, thickness + 1, lambda plane, value, weight, shift, points=points:
                  cv2.polylines(plane, [points], True, value, weight, cv2.LINE_AA, shift))
    if settings.motion_boxes and motion is not None and motion.motion:
        for box in motion.boxes:
            top_left = (int(box.x * sx), int(box.y * sy))
            bottom_right = (int((box.x + box.w) * sx), int((box.y + box.h) * sy))
            _draw(image, BOX, thickness + 1, lambda plane, value, weight, shift, a=top_left, b=bottom_right:
                  cv2.rectangle(plane, a, b, value, weight, cv2.LINE_8, shift))
    if settings.timestamp:
        text = time.strftime(settings.timestamp_format, time.localtime(timestamp))
        size = max(0.4, height / 720 * 0.8)
        origin = (10, int(30 * size / 0.8))
        if isinstance(image, I420):
            _text_on_planes(image, text, origin, size, thickness)
        else:
            _text(image, text, origin, size, thickness)


Drawing = Callable[[np.ndarray, "int | tuple[int, int, int]", int, int], object]
"""Draws one shape on a plane: (plane, value, thickness, shift: fractional bits of the points)."""


def _draw(image: np.ndarray | I420, bgr: tuple[int, int, int], thickness: int, drawing: Drawing) -> None:
    if not isinstance(image, I420):
        drawing(image, bgr, thickness, 0)
        return
    y, cb, cr = ycbcr(bgr)
    drawing(image.y, y, thickness, 0)
    # On the half-size chroma planes: the same points read with one fractional bit (halved without
    # rounding), lines half as thick.
    half = max(1, round(thickness / 2))
    drawing(image.u, cb, half, 1)
    drawing(image.v, cr, half, 1)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], size: float, thickness: int) -> None:
    # A dark outline under the white text keeps it legible on bright and dark scenes alike.
    cv2.putText(image, text, origin, FONT, size, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, FONT, size, (255, 255, 255), thickness, cv2.LINE_AA)


def _text_on_planes(picture: I420, text: str, origin: tuple[int, int], size: float, thickness: int) -> None:
    """The text drawn on the planes, on the rectangle it covers only: onto Y as on a BGR image (white
    over a dark outline; anti-aliased text blends the same in Y as in each of B, G and R), and the
    colour under it taken out in proportion to how much of each chroma pixel the text covers, as
    white and black have none."""
    (text_width, text_height), baseline = cv2.getTextSize(text, FONT, size, thickness + 2)
    margin = thickness + 2
    width, height = picture.size
    x0, y0 = max(0, origin[0] - margin) & ~1, max(0, origin[1] - text_height - margin) & ~1
    x1 = min(width, (origin[0] + text_width + margin + 1) & ~1)
    y1 = min(height, (origin[1] + baseline + margin + 1) & ~1)
    if x1 <= x0 or y1 <= y0:
        return
    at = (origin[0] - x0, origin[1] - y0)
    _text(picture.y[y0:y1, x0:x1], text, at, size, thickness)
    cover = _coverage(text, at, size, thickness, (x1 - x0, y1 - y0)).astype(np.uint16)
    for plane in (picture.u, picture.v):
        chroma = plane[y0 // 2:y1 // 2, x0 // 2:x1 // 2]
        chroma[:] = (chroma * (255 - cover) + 128 * cover + 127) // 255


@functools.lru_cache(maxsize=4)
def _coverage(text: str, at: tuple[int, int], size: float, thickness: int, box: tuple[int, int]) -> np.ndarray:
    """How much of each chroma pixel (0-255) the text and its outline cover, in a ``box`` of Y pixels:
    the same timestamp is drawn on every frame of a second, so it is worked out once."""
    canvas = np.zeros((box[1], box[0]), np.uint8)
    cv2.putText(canvas, text, at, FONT, size, 255, thickness + 2, cv2.LINE_AA)
    half = cv2.resize(canvas, (box[0] // 2, box[1] // 2), interpolation=cv2.INTER_AREA)
    half.flags.writeable = False
    return half
