"""Motion detection and motion events: pure classes, frames in, results out, no threads or I/O.

The detector is the demo's algorithm made configurable: a blurred grey image about 400 px wide,
a running-average background (weight 0.1), the absolute difference, a threshold of 25, erode and
dilate, then boxes around what changed. Added for users: a warm-up while the background settles,
a minimum changed area so noise and the odd leaf do not count, and events with hysteresis.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import cv2
import numpy as np

from appliance.config import MotionSettings


@dataclass(frozen=True)
class Box:
    """A rectangle in full-frame pixel coordinates."""

    x: int
    y: int
    w: int
    h: int

    def union(self, other: Box) -> Box:
        x0, y0 = min(self.x, other.x), min(self.y, other.y)
        x1, y1 = max(self.x + self.w, other.x + other.w), max(self.y + self.h, other.y + other.h)
        return Box(x0, y0, x1 - x0, y1 - y0)

    def as_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


@dataclass(frozen=True)
class MotionResult:
    """What one frame showed: ``area`` is the changed fraction, ``score`` the mean change strength."""

    motion: bool
    boxes: tuple[Box, ...] = ()
    area: float = 0.0
    score: float = 0.0
    warming_up: bool = False

    @property
    def box(self) -> Box | None:
        """The box around all changes."""
        if not self.boxes:
            return None
        union = self.boxes[0]
        for other in self.boxes[1:]:
            union = union.union(other)
        return union


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

    def detect(self, image: np.ndarray, gray: np.ndarray | None = None) -> MotionResult:
        """Compare one frame with the background and fold it in.

        ``image`` is the BGR frame (its size scales the boxes); ``gray`` an optional ready grey image
        of the same scene (the Pi's lores Y plane), used instead of converting ``image``.
        """
        small = self._small_gray(image, gray)
        if self._background is None or self._background.shape != small.shape:
            self._background = small.astype(np.float32)
            self._frames = 1
            return MotionResult(motion=False, warming_up=self._settings.warmup_frames > 0)
        delta = cv2.absdiff(small, cv2.convertScaleAbs(self._background))
        cv2.accumulateWeighted(small, self._background, self._settings.background_weight)
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


def _scaled(rect: tuple[int, int, int, int], sx: float, sy: float) -> Box:
    x, y, w, h = rect
    return Box(int(x * sx), int(y * sy), int(np.ceil(w * sx)), int(np.ceil(h * sy)))


def new_event_id(started_at: float) -> str:
    """Sortable, filename-safe id: UTC start time plus a random tail."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_at)) + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class MotionEvent:
    """One period of motion, from the frame that started it to ``event_gap`` after the last motion."""

    id: str
    started_at: float
    ended_at: float | None = None
    box: Box | None = None
    peak_score: float = 0.0
    peak_area: float = 0.0
    frames: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": "motion",
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "box": self.box.as_dict() if self.box else None,
            "peak_score": round(self.peak_score, 4),
            "peak_area": round(self.peak_area, 4),
            "frames": self.frames,
        }


@dataclass(frozen=True)
class EventChange:
    """An event started or ended, with the event as it stands."""

    kind: Literal["start", "end"]
    event: MotionEvent


@dataclass
class MotionEventTracker:
    """Hysteresis over per-frame results.

    An event starts after ``start_frames`` consecutive frames with motion, so one noisy frame is not
    an event, and ends when ``event_gap`` seconds pass without motion, so a person pausing mid-room
    does not split one visit into many events.
    """

    start_frames: int
    event_gap: float
    _streak: int = 0
    _last_motion: float = 0.0
    _current: MotionEvent | None = field(default=None)

    @classmethod
    def from_settings(cls, settings: MotionSettings) -> MotionEventTracker:
        return cls(start_frames=settings.start_frames, event_gap=settings.event_gap)

    @property
    def current(self) -> MotionEvent | None:
        return self._current

    def update(self, result: MotionResult, now: float) -> EventChange | None:
        """Feed one frame's result taken at ``now``; returns a start or end when one happens."""
        if result.motion:
            self._streak += 1
            self._last_motion = now
            if self._current is not None:
                box = result.box
                current = self._current
                self._current = replace(
                    current,
                    box=current.box.union(box) if current.box and box else current.box or box,
                    peak_score=max(current.peak_score, result.score),
                    peak_area=max(current.peak_area, result.area),
                    frames=current.frames + 1,
                )
                return None
            if self._streak >= self.start_frames:
                self._current = MotionEvent(id=new_event_id(now), started_at=now, box=result.box,
                                            peak_score=result.score, peak_area=result.area, frames=1)
                return EventChange("start", self._current)
            return None
        self._streak = 0
        if self._current is not None and now - self._last_motion >= self.event_gap:
            return self.finish(now)
        return None

    def finish(self, now: float) -> EventChange | None:
        """End the current event (the camera is stopping); None when there is none."""
        self._streak = 0
        if self._current is None:
            return None
        ended = replace(self._current, ended_at=now)
        self._current = None
        return EventChange("end", ended)
