"""What is drawn on the streamed picture: a timestamp and the motion boxes, each switchable."""

from __future__ import annotations

import time
from collections.abc import Sequence

import cv2
import numpy as np

from appliance.config import OverlaySettings, Zone
from appliance.motion.events import MotionResult


def draw_overlay(image: np.ndarray, timestamp: float, motion: MotionResult | None,
                 settings: OverlaySettings, scale: tuple[float, float] = (1.0, 1.0),
                 zones: Sequence[Zone] = ()) -> None:
    """Draw in place on ``image`` (BGR); sizes scale with the frame so 320x240 and 1080p both read.

    Boxes are in capture-frame pixels; ``scale`` maps them onto a scaled-down stream frame. Zones are
    in fractions of the frame: outlined, grey where motion is ignored, yellow where it is watched.
    """
    height, width = image.shape[:2]
    thickness = max(1, height // 360)
    sx, sy = scale
    if settings.zones:
        for zone in zones:
            points = np.array([[round(x * (width - 1)), round(y * (height - 1))] for x, y in zone.points], np.int32)
            colour = (0, 255, 255) if zone.mode == "include" else (160, 160, 160)
            cv2.polylines(image, [points], True, colour, thickness + 1, cv2.LINE_AA)
    if settings.motion_boxes and motion is not None and motion.motion:
        for box in motion.boxes:
            top_left = (int(box.x * sx), int(box.y * sy))
            bottom_right = (int((box.x + box.w) * sx), int((box.y + box.h) * sy))
            cv2.rectangle(image, top_left, bottom_right, (0, 0, 255), thickness + 1)
    if settings.timestamp:
        text = time.strftime(settings.timestamp_format, time.localtime(timestamp))
        size = max(0.4, height / 720 * 0.8)
        origin = (10, int(30 * size / 0.8))
        # A dark outline under the white text keeps it legible on bright and dark scenes alike.
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), thickness, cv2.LINE_AA)
