"""Detections become objects: tracked across frames, scored over time, alerting only when they move.

Pure: detections in, objects and news out; no threads, no model, no numpy. A model scores each frame
on its own, and one frame's guess is noise: a tree's shadow is a dog at 0.52 once. So, as Frigate does,
a detection is matched to the object it continues (same label, overlapping where the object was
heading, or near it for a fast car at a few detections a second), and an object *alerts* only when

- it has been seen at least twice and the median of its recent scores reaches its label's threshold,
- its box lies within its label's size limits and in a zone that counts its label,
- and it has **moved**: its box left the place it was first seen (``STILL_SHIFT``). A car
  parked in view, found again each time leaves move around it, keeps its box and never alerts; if it
  drives off, it moves and does.

An object whose box stays put for ``stationary_seconds`` is *stationary* (reported, never alerting
again for staying); one not seen for ``lost_seconds`` is gone. Counts per label are of objects that
alerted and are not gone: they drive "Person detected" and its count.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from appliance.config import ObjectRule, Zone
from appliance.motion.events import Box

STILL_SHIFT = 0.5
"""A box whose centre stays within this fraction of its smaller side of where its object stayed has not
moved. The centre, not the overlap: the same parked van, boxed in crops of different sizes, comes back
a little larger or smaller, but in the same place."""
MATCH_IOU = 0.2
"""A detection overlapping an object's expected box by this much continues it."""
MATCH_DISTANCE = 1.5
"""...or one whose centre is within this many of the object's box sizes (fast movers at a few fps)."""
SCORE_HISTORY = 8
"""Recent scores whose median decides an object's score."""
MIN_HITS = 2
"""Detections before an object may alert: one frame's guess is not an object."""
BETTER_BY = 0.05
"""A snapshot is renewed when the object's score beats its best by this much."""


@dataclass(frozen=True)
class Detection:
    """One box the model found in one frame, in the frame's pixels."""

    label: str
    score: float
    box: Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when apart)."""
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def _centre(box: Box) -> tuple[float, float]:
    return box.x + box.w / 2, box.y + box.h / 2


def _moved(anchor: Box, box: Box) -> bool:
    (x0, y0), (x1, y1) = _centre(anchor), _centre(box)
    return ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 > STILL_SHIFT * min(anchor.w, anchor.h)


def inside(point: tuple[float, float], polygon: Sequence[tuple[float, float]]) -> bool:
    """Whether ``point`` lies in ``polygon`` (even-odd rule), both in the same units."""
    x, y = point
    result = False
    for (x0, y0), (x1, y1) in zip(polygon, [*polygon[1:], polygon[0]], strict=True):
        if (y0 > y) != (y1 > y) and x < (x1 - x0) * (y - y0) / (y1 - y0) + x0:
            result = not result
    return result


def zone_allows(label: str, box: Box, size: tuple[int, int], zones: Sequence[Zone]) -> bool:
    """Whether zones count ``label`` where ``box`` stands (its bottom centre: where a person's feet are).

    An exclude zone with no labels, or naming this one, rules the place out; when include zones apply
    to the label (they name it, or name nothing), the place must lie in one of them.
    """
    width, height = size
    foot = ((box.x + box.w / 2) / width, (box.y + box.h) / height)
    includes = []
    for zone in zones:
        applies = not zone.labels or label in zone.labels
        if not applies:
            continue
        if zone.mode == "exclude" and inside(foot, zone.points):
            return False
        if zone.mode == "include":
            includes.append(zone)
    return not includes or any(inside(foot, zone.points) for zone in includes)


@dataclass
class TrackedObject:
    """One object followed across detections."""

    id: int
    label: str
    box: Box
    first_seen: float
    last_seen: float
    event_id: str | None
    anchor: Box  # where it has stayed since ``still_since``
    still_since: float
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=SCORE_HISTORY))
    best_score: float = 0.0
    best_box: Box | None = None
    hits: int = 0
    moved: bool = False
    alerted: bool = False
    velocity: tuple[float, float] = (0.0, 0.0)  # pixels a second

    @property
    def score(self) -> float:
        """The median of its recent scores: one lucky frame does not make a person."""
        return statistics.median(self.scores) if self.scores else 0.0

    def stationary(self, now: float, after: float) -> bool:
        return now - self.still_since >= after

    def expected(self, now: float) -> Box:
        """Where the box should be at ``now``, going on as it went."""
        dt = now - self.last_seen
        dx, dy = self.velocity
        return Box(round(self.box.x + dx * dt), round(self.box.y + dy * dt), self.box.w, self.box.h)

    def as_dict(self, now: float, stationary_after: float) -> dict[str, object]:
        return {"id": self.id, "label": self.label, "score": round(self.best_score, 3),
                "box": (self.best_box or self.box).as_dict(), "first_seen_ago": round(now - self.first_seen, 2),
                "stationary": self.stationary(now, stationary_after), "event_id": self.event_id}


@dataclass(frozen=True)
class ObjectNews:
    """What the tracker has to tell: an object alerted, got a better picture, or is gone; the counts."""

    kind: Literal["alert", "better", "gone"]
    label: str
    object_id: int
    event_id: str | None
    score: float
    box: Box
    frame_size: tuple[int, int]
    counts: Mapping[str, int]  # label -> objects alerting and not gone, for every wanted label
    jpeg: bytes | None = None  # the best picture of it, its box drawn (alert and better)
    at: float = 0.0  # time.time() of the frame

    def as_dict(self) -> dict[str, object]:
        width, height = self.frame_size
        return {"kind": self.kind, "label": self.label, "object_id": self.object_id, "event_id": self.event_id,
                "score": round(self.score, 3), "box": self.box.as_dict(), "frame": {"width": width, "height": height},
                "at": self.at}


class ObjectTracker:
    """Objects of one camera: ``update`` with one frame's detections, ``expire`` when frames stop."""

    def __init__(self, rules: Mapping[str, ObjectRule], stationary_seconds: float, lost_seconds: float,
                 zones: Callable[[], Sequence[Zone]] = tuple) -> None:
        self.rules = dict(rules)
        self.stationary_seconds = stationary_seconds
        self.lost_seconds = lost_seconds
        self._zones = zones
        self._objects: list[TrackedObject] = []
        self._next_id = 1

    @property
    def objects(self) -> list[TrackedObject]:
        return list(self._objects)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.rules, 0)
        for obj in self._objects:
            if obj.alerted:
                counts[obj.label] = counts.get(obj.label, 0) + 1
        return counts

    def wanted(self, detection: Detection, size: tuple[int, int]) -> bool:
        """Whether a detection is worth following: a wanted label, scoring and sized within its rule."""
        rule = self.rules.get(detection.label)
        if rule is None or detection.score < rule.min_score:
            return False
        area = detection.box.w * detection.box.h / (size[0] * size[1])
        return rule.min_area <= area <= rule.max_area

    def update(self, detections: Sequence[Detection], size: tuple[int, int], now: float,
               event_id: str | None) -> list[tuple[Literal["alert", "better", "gone"], TrackedObject]]:
        """Match one frame's detections (taken at monotonic ``now``, frame of ``size``) to the objects;
        returns what changed: objects that alerted, got a better score, or are gone."""
        changes: list[tuple[Literal["alert", "better", "gone"], TrackedObject]] = []
        found = [d for d in detections if self.wanted(d, size)]
        pairs = []
        for i, detection in enumerate(found):
            for obj in self._objects:
                if obj.label != detection.label:
                    continue
                expected = obj.expected(now)
                overlap = iou(expected, detection.box)
                (ex, ey), (dx, dy) = _centre(expected), _centre(detection.box)
                reach = MATCH_DISTANCE * max(obj.box.w, obj.box.h, 1)
                distance = ((ex - dx) ** 2 + (ey - dy) ** 2) ** 0.5
                if overlap >= MATCH_IOU or distance <= reach:
                    pairs.append((overlap + 1.0 - distance / reach / 2, i, obj))
        taken_detections: set[int] = set()
        taken_objects: set[int] = set()
        for _, i, obj in sorted(pairs, key=lambda pair: -pair[0]):
            if i in taken_detections or obj.id in taken_objects:
                continue
            taken_detections.add(i)
            taken_objects.add(obj.id)
            change = self._follow(obj, found[i], size, now, event_id)
            if change is not None:
                changes.append((change, obj))
        for i, detection in enumerate(found):
            if i not in taken_detections:
                obj = TrackedObject(self._next_id, detection.label, detection.box, now, now, event_id,
                                    anchor=detection.box, still_since=now)
                self._next_id += 1
                obj.scores.append(detection.score)
                obj.hits = 1
                obj.best_score, obj.best_box = detection.score, detection.box
                self._objects.append(obj)
        changes.extend(("gone", obj) for obj in self.expire(now))
        return changes

    def _follow(self, obj: TrackedObject, detection: Detection, size: tuple[int, int], now: float,
                event_id: str | None) -> Literal["alert", "better"] | None:
        dt = now - obj.last_seen
        if dt > 0:
            (x0, y0), (x1, y1) = _centre(obj.box), _centre(detection.box)
            vx, vy = (x1 - x0) / dt, (y1 - y0) / dt
            obj.velocity = (vx, vy) if obj.hits < 2 else ((obj.velocity[0] + vx) / 2, (obj.velocity[1] + vy) / 2)
        obj.box, obj.last_seen = detection.box, now
        obj.hits += 1
        obj.scores.append(detection.score)
        if event_id is not None:
            obj.event_id = event_id
        if _moved(obj.anchor, detection.box):
            obj.moved = True
            obj.anchor, obj.still_since = detection.box, now
        rule = self.rules[obj.label]
        better = detection.score >= obj.best_score + BETTER_BY
        if better or obj.best_box is None:
            obj.best_score, obj.best_box = max(obj.best_score, detection.score), detection.box
        if not obj.alerted:
            if obj.moved and obj.hits >= MIN_HITS and obj.score >= rule.threshold \
                    and zone_allows(obj.label, detection.box, size, self._zones()):
                obj.alerted = True
                obj.best_score, obj.best_box = max(obj.best_score, detection.score), detection.box
                return "alert"
            return None
        return "better" if better else None

    def expire(self, now: float) -> list[TrackedObject]:
        """Forget objects not seen for ``lost_seconds``; returns those that had alerted (now gone)."""
        gone = [obj for obj in self._objects if now - obj.last_seen >= self.lost_seconds]
        if gone:
            self._objects = [obj for obj in self._objects if obj not in gone]
        return [obj for obj in gone if obj.alerted]

    def clear(self) -> list[TrackedObject]:
        """Forget every object (the camera stopped); returns those that had alerted."""
        gone = [obj for obj in self._objects if obj.alerted]
        self._objects = []
        return gone
