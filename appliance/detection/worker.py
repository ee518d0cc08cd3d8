"""The detector's thread: frames from the capture thread in, object news out, never holding anyone up.

The capture thread calls ``wants_frame`` at each analysed frame with motion; it says yes only when a
detection is due (``detection.fps``) and this thread is idle, so a frame the detector has no time for
is skipped (counted), never queued, and the capture thread copies nothing for it. This thread takes
the frame, chooses where to look (a square around the motion at full resolution, or the whole frame),
runs the model, feeds the tracker and tells ``on_news`` what changed, with a snapshot of each alerting
object (its box drawn, made here, not on the capture thread). While no frames come (motion stopped),
it still wakes to let objects go when they have not been seen for ``lost_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.camera_backends.yuv import I420, bgr_of, scaled_copy, size_of
from appliance.capture.detect import DetectFrame
from appliance.config import DetectionSettings, Zone
from appliance.detection.model import SsdModel, region_for
from appliance.detection.objects import ObjectNews, ObjectTracker, TrackedObject
from appliance.motion.events import Box

log = logging.getLogger(__name__)

SNAPSHOT_WIDTH = 640
"""An object's snapshot is the frame scaled to at most this wide, its box drawn."""
SNAPSHOT_QUALITY = 85
BOX_COLOUR = (0, 200, 255)  # BGR: amber, unlike the motion boxes' green


@dataclass(frozen=True)
class DetectionStats:
    """For ``/api/status`` and the bench: how much it looked, how long it took, what it sees now."""

    detections: int
    skipped: int  # frames with motion that came while the detector was busy: skipped, not queued
    ms_mean: float | None  # model time per detection, recent mean
    busy_share: float  # fraction of one core spent detecting, over the recent detections
    counts: dict[str, int]
    objects: list[dict[str, object]]


class DetectionWorker:
    """Owns the detector thread (``start``/``stop``) and the tracker; an ``ObjectSink`` for the pipeline."""

    def __init__(self, model: SsdModel, settings: DetectionSettings, on_news: Callable[[ObjectNews], None],
                 zones: Callable[[], Sequence[Zone]] = tuple, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.settings = settings
        self._on_news = on_news
        self._monotonic = monotonic
        self.tracker = ObjectTracker(settings.objects, settings.stationary_seconds, settings.lost_seconds, zones)
        self._min_score = min((rule.min_score for rule in settings.objects.values()), default=0.5)
        self._period = 1.0 / settings.fps
        self._cond = threading.Condition()
        self._frame: DetectFrame | None = None
        self._busy = False
        self._next_due = 0.0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._durations: deque[tuple[float, float]] = deque(maxlen=20)  # (started, seconds) of recent runs
        self._size = (1, 1)  # the last frame's, for the news of objects gone while no frame comes
        self.detections = 0
        self.skipped = 0
        self.errors = 0

    # --- the capture thread's side (ObjectSink) -------------------------------------------------------

    def wants_frame(self, now: float) -> bool:
        if self._busy or self._frame is not None:
            self.skipped += 1  # arrived while the detector was still at an earlier frame
            return False
        return now >= self._next_due

    def offer(self, frame: DetectFrame) -> None:
        with self._cond:
            self._frame = frame
            self._next_due = max(self._next_due + self._period, frame.captured_at)
            self._cond.notify_all()

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="detector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread, waiting up to ``timeout`` (a detection in progress finishes first)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the detector is still busy after %.1f s; leaving it", timeout)

    def camera_stopped(self) -> None:
        """The camera went off: every object is gone (its counts fall to zero)."""
        with self._cond:
            self._frame = None
            gone = self.tracker.clear()
        for obj in gone:
            self._tell("gone", obj, self._size, None, time.time())

    def stats(self) -> DetectionStats:
        durations = list(self._durations)
        now = self._monotonic()
        busy = sum(d for _, d in durations)
        ms = busy / len(durations) * 1000 if durations else None
        span = now - durations[0][0] if durations else 0.0
        share = busy / span if span > 0 else 0.0
        with self._cond:
            objects = [obj.as_dict(now, self.settings.stationary_seconds) for obj in self.tracker.objects
                       if obj.alerted]
            counts = self.tracker.counts()
        return DetectionStats(self.detections, self.skipped, None if ms is None else round(ms, 1),
                              round(min(1.0, share), 3), counts, objects)

    # --- the thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                # Asleep until a frame comes, or (while objects are followed) until the first may be lost.
                self._cond.wait_for(lambda: self._frame is not None or self._stopping, timeout=self._until_lost())
                if self._stopping:
                    return
                frame, self._frame = self._frame, None
                self._busy = frame is not None
                if frame is None:
                    gone = self.tracker.expire(self._monotonic())
            if frame is None:
                for obj in gone:
                    self._tell("gone", obj, self._size, None, time.time())
                continue
            try:
                self._detect(frame)
            except Exception:  # a model or drawing failure must not end detection for good
                self.errors += 1
                log.exception("object detection failed on a frame")

    def _until_lost(self) -> float | None:
        """Under the lock: seconds until the first followed object would be lost; None without objects."""
        objects = self.tracker.objects
        if not objects:
            return None
        last = min(obj.last_seen for obj in objects)
        return max(0.05, last + self.settings.lost_seconds - self._monotonic())

    def _detect(self, frame: DetectFrame) -> None:
        size = self._size = size_of(frame.image)
        smallest = max(self.model.input_size)
        region = region_for(frame.motion, size, smallest) if self.settings.region == "motion" \
            else region_for((), size, smallest)
        started = self._monotonic()
        detections = self.model.detect(frame.image, region, self._min_score)
        self._durations.append((started, self._monotonic() - started))
        self.detections += 1
        with self._cond:
            changes = self.tracker.update(detections, size, frame.captured_at, frame.event_id)
        for kind, obj in changes:
            self._tell(kind, obj, size, frame.image if kind != "gone" else None, frame.timestamp)

    def _tell(self, kind: str, obj: TrackedObject, size: tuple[int, int], image: np.ndarray | I420 | None,
              at: float) -> None:
        box = obj.best_box or obj.box
        jpeg = snapshot(image, box, f"{obj.label} {obj.best_score:.0%}") if image is not None else None
        with self._cond:
            counts = self.tracker.counts()
        news = ObjectNews(kind, obj.label, obj.id, obj.event_id, obj.best_score, box,  # type: ignore[arg-type]
                          size, counts, jpeg, at)
        try:
            self._on_news(news)
        except Exception:
            log.exception("an object listener failed")


def snapshot(image: np.ndarray | I420, box: Box, caption: str) -> bytes:
    """The frame at most ``SNAPSHOT_WIDTH`` wide with ``box`` drawn and captioned, as a JPEG."""
    width, height = size_of(image)
    scale = min(1.0, SNAPSHOT_WIDTH / width)
    small = bgr_of(scaled_copy(image, (round(width * scale), round(height * scale))) if scale < 1 else image)
    if small is image:
        small = small.copy()
    x0, y0 = round(box.x * scale), round(box.y * scale)
    x1, y1 = round((box.x + box.w) * scale), round((box.y + box.h) * scale)
    cv2.rectangle(small, (x0, y0), (x1, y1), BOX_COLOUR, 2)
    (tw, th), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    top = max(0, y0 - th - 6)
    cv2.rectangle(small, (x0, top), (x0 + tw + 6, top + th + 6), BOX_COLOUR, -1)
    cv2.putText(small, caption, (x0 + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding of an object snapshot failed")
    return data.tobytes()
