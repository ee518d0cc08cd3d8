"""Motion detection: a pure class, frames in, results out, no threads or I/O.

The detector is the demo's algorithm made configurable: a blurred grey image about 400 px wide,
a running-average background (weight 0.1), the absolute difference, a threshold of 25, erode and
dilate, then boxes around what changed. Added for users: a warm-up while the background settles
and a minimum changed area so noise and the odd leaf do not count. Events over these results are
``appliance.motion_events``.
"""

from __future__ import annotations

import cv2
import numpy as np

from appliance.config import MotionSettings
from appliance.motion_events import Box, MotionResult

__all__ = ["MotionDetector"]


class MotionDetector:
    """Running-average background subtraction on a small blurred grey image."""

    def __init__(self, settings: MotionSettings) -> None:
        self._settings = settings
        self._background: np.ndarray | None = None
        self._frames = 0
        self._kernel = np.ones((3, 3), np.uint8)

    def reset(self) -> None:
        """Forget the background (after the camera restarts, the scene may have changed)."""
        self._background = None
        self._frames = 0

    def _small_gray(self, image: np.ndarray, gray: np.ndarray | None) -> np.ndarray:
        width = self._settings.width
        source = gray if gray is not None else image
        h, w = source.shape[:2]
        if w > width:
            source = cv2.resize(source, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        if source.ndim == 3:
            source = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(source, (self._settings.blur, self._settings.blur), 0)

    def detect(self, image: np.ndarray, gray: np.ndarray | None = None, elapsed: float | None = None) -> MotionResult:
        """Compare one frame with the background and fold it in.

        ``image`` is the BGR frame (its size scales the boxes); ``gray`` an optional ready grey image
        of the same scene (the Pi's lores Y plane), used instead of converting ``image``. ``elapsed``
        is the time since the previous analysis: ``background_weight`` is the weight of a frame at
        30 frames/s, scaled to it, so the background forgets at the same speed in seconds whether
        motion is analysed 5 or 30 times a second. Without it each call counts as 1/30 s.
        """
        small = self._small_gray(image, gray)
        if self._background is None or self._background.shape != small.shape:
            self._background = small.astype(np.float32)
            self._frames = 1
            return MotionResult(motion=False, warming_up=self._settings.warmup_frames > 0)
        delta = cv2.absdiff(small, cv2.convertScaleAbs(self._background))
        cv2.accumulateWeighted(small, self._background, self._weight(elapsed))
        self._frames += 1
        if self._frames <= self._settings.warmup_frames:
            return MotionResult(motion=False, warming_up=True)
        _, mask = cv2.threshold(delta, self._settings.threshold, 255, cv2.THRESH_BINARY)
        mask = cv2.dilate(cv2.erode(mask, self._kernel, iterations=1), self._kernel, iterations=2)
        changed = int(cv2.countNonZero(mask))
        area = changed / mask.size
        if changed == 0 or area < self._settings.min_area:
            return MotionResult(motion=False, area=area)
        score = float(delta[mask > 0].mean()) / 255.0
        # Per axis: a lores grey image may not have exactly the main stream's aspect ratio.
        sx, sy = image.shape[1] / small.shape[1], image.shape[0] / small.shape[0]
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_pixels = max(1.0, self._settings.min_area * mask.size / 4)
        boxes = []
        for contour in contours:
            if cv2.contourArea(contour) < min_pixels:
                continue
            boxes.append(_scaled(cv2.boundingRect(contour), sx, sy))
        if not boxes:  # many specks, none large: still counts as the changed area says
            boxes.append(_scaled(cv2.boundingRect(mask), sx, sy))
        return MotionResult(motion=True, boxes=tuple(boxes), area=area, score=score)


    def _weight(self, elapsed: float | None) -> float:
        weight = self._settings.background_weight
        if elapsed is None or elapsed <= 0:
            return weight
        return 1.0 - (1.0 - weight) ** min(elapsed * REFERENCE_FPS, 1000.0)


REFERENCE_FPS = 30.0
"""The rate ``background_weight`` is given at: the demo's camera."""


def _scaled(rect: tuple[int, int, int, int], sx: float, sy: float) -> Box:
    x, y, w, h = rect
    return Box(int(x * sx), int(y * sy), int(np.ceil(w * sx)), int(np.ceil(h * sy)))
