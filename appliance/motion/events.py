"""Motion results and events: pure data and the event tracker, no OpenCV, no threads, no I/O.

Listeners (MQTT, the LED, the page, the recorder) need these types without importing the detector.
Durations (the gap that ends an event, the streak that starts one) are measured on the monotonic
clock, so a wall-clock step (NTP on a Pi without a real-time clock) cannot hold an event open for an
hour or end it early; wall time only labels events.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Literal


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
    light_change: bool = False  # most of the frame changed at once: taken as light, background renewed

    @property
    def box(self) -> Box | None:
        """The box around all changes."""
        if not self.boxes:
            return None
        union = self.boxes[0]
        for other in self.boxes[1:]:
            union = union.union(other)
        return union


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
    does not split one visit into many events. An event that lasts ``max_seconds`` (a flag flapping
    all afternoon, a detector stuck on) ends there and, while motion goes on, the next one starts at
    once: automations see an end, and the history gets one entry per period rather than one forever.
    """

    start_frames: int
    event_gap: float
    max_seconds: float = float("inf")
    _streak: int = 0
    _last_motion: float = 0.0
    _started: float = 0.0  # monotonic start of the current event
    _current: MotionEvent | None = field(default=None)

    @property
    def current(self) -> MotionEvent | None:
        return self._current

    def update(self, result: MotionResult, now: float, monotonic: float | None = None) -> EventChange | None:
        """Feed one frame's result taken at wall time ``now`` and ``monotonic`` (the clock gaps are
        measured on; ``now`` when not given); returns a start or end when one happens."""
        mono = now if monotonic is None else monotonic
        if result.motion:
            self._streak += 1
            self._last_motion = mono
            if self._current is not None and mono - self._started >= self.max_seconds:
                ended = replace(self._current, ended_at=now)
                self._current = None
                self._streak = self.start_frames  # the motion goes on: the next event starts now
                return EventChange("end", ended)
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
                self._started = mono
                return EventChange("start", self._current)
            return None
        self._streak = 0
        if self._current is not None and mono - self._last_motion >= self.event_gap:
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
