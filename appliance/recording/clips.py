"""Event clips as MP4, cut from the one H.264 encode, with a pre-roll of encoded frames.

When an event starts, its clip opens with the ring's packets from the last keyframe at least
``pre_seconds`` before the trigger, takes every packet while the event runs and for
``post_seconds`` after it ends, and is finished (fsynced, its figures in the event's record) on the
first packet past that. Events may overlap: a packet then goes to each open clip, from one queued
job. When the disk falls behind and video is dropped, each clip it was for waits for the next
keyframe, so what it keeps always decodes.

The ring only ever holds frames under the privacy masks as they are now: when they change, what it
holds is dropped, so an event just after a mask is drawn cannot store, from its pre-roll, what the
mask hides. A clip in progress keeps its earlier frames: they were the live picture when taken.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from appliance.config import ClipSettings
from appliance.h264.encoder import Packet
from appliance.h264.feed import H264Feed
from appliance.history.events import EventStore, UnknownEvent
from appliance.motion.events import EventChange
from appliance.recording.ring import PacketRing
from appliance.recording.subscription import CameraSubscription
from appliance.recording.worker import DiskWorker
from appliance.state import StateChange

log = logging.getLogger(__name__)

MAX_LATE = 5.0  # s an event's news may trail its frame; more means the wall clock stepped meanwhile


@dataclass
class _OpenClip:
    until: float | None = None  # monotonic end of the post-roll; None while the event runs
    needs_key: bool = False  # video was dropped (or none came yet): it resumes at a keyframe


class EventClips:
    """A motion listener and a consumer of the H.264 feed; owns the ``clip-writer`` thread."""

    def __init__(self, store: EventStore, settings: ClipSettings, fps: float,
                 on_saved: Callable[[str, dict[str, Any]], None], max_pending_bytes: int,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._store = store
        self._settings = settings
        self._fps = fps
        self._on_saved = on_saved
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._ring = PacketRing(settings.pre_seconds)
        self._open: dict[str, _OpenClip] = {}
        self._masks: tuple[Any, ...] = ()  # the privacy masks of the newest packet
        self._worker = DiskWorker("clip-writer", max_pending_bytes, monotonic)
        self._video = CameraSubscription()
        self._opened: set[str] = set()  # clips begun in the store (writer thread only)
        self._failed: set[str] = set()  # clips the store refused: not tried again packet by packet
        self.packets_written = 0

    # --- wiring --------------------------------------------------------------------------------

    def start(self, feed: H264Feed, camera_on: Callable[[], bool]) -> None:
        """Subscribe, wanting video if the camera is on; a state heard already (``on_state`` is
        added as a listener first) is newer than ``camera_on`` and wins."""
        self._worker.start()
        self._video.start(feed, self._on_packet, camera_on)

    def close(self, timeout: float = 1.0) -> None:
        """No more packets; clips still open end where they are, durable, within ``timeout``."""
        self._video.close()
        with self._lock:
            ending = list(self._open)
            self._open.clear()
            self._ring.clear()
        self._worker.stop(timeout, last=partial(self._finish_all, ending))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the writer has written what it was given (tests)."""
        return self._worker.flush(timeout)

    # --- listeners (the controller's dispatcher thread) -----------------------------------------

    def on_state(self, change: StateChange) -> None:
        """Video while the camera is on; when it stops, every open clip ends with what it has."""
        on = self._video.on_state(change)
        with self._lock:
            ending = [] if on else list(self._open)
            if not on:
                self._open.clear()
                self._ring.clear()
        for event_id in ending:
            self._worker.call(partial(self._finish, event_id))

    def on_motion(self, change: EventChange, _jpeg: bytes | None) -> None:
        """An event started (its clip opens with the pre-roll) or ended (its post-roll begins).

        Heard on the dispatcher's thread, a moment after the frame that made the change: the
        moment is the event's own (its wall-clock time, as far back from now on the monotonic
        clock), so a slow listener before this one does not shorten the pre-roll."""
        event = change.event
        moment = event.started_at if change.kind == "start" else event.ended_at
        late = min(max(0.0, self._wall() - moment), MAX_LATE) if moment is not None else 0.0
        at = self._monotonic() - late
        with self._lock:
            if change.kind == "start":
                pre = self._ring.since(at - self._settings.pre_seconds)
                self._open[event.id] = _OpenClip(needs_key=not pre)
                if pre:
                    self._worker.call(partial(self._write, (event.id,), pre))
            elif event.id in self._open:
                self._open[event.id].until = at + self._settings.post_seconds

    # --- the encoder thread ----------------------------------------------------------------------

    def _on_packet(self, packet: Packet) -> None:
        with self._lock:
            if packet.masks != self._masks:  # the first frame under new masks: nothing older stays
                self._masks = packet.masks
                self._ring.clear()
                if not packet.keyframe:
                    self._video.request_keyframe()  # so the ring has a start again at once
            self._ring.add(packet)
            takers = []
            for event_id, clip in list(self._open.items()):
                if clip.until is not None and packet.captured_at > clip.until:
                    del self._open[event_id]
                    self._worker.call(partial(self._finish, event_id))
                elif packet.keyframe or not clip.needs_key:
                    clip.needs_key = False
                    takers.append(event_id)
            if takers and not self._worker.offer(partial(self._write, tuple(takers), [packet]), len(packet.data)):
                for event_id in takers:
                    self._open[event_id].needs_key = True

    # --- the writer thread -----------------------------------------------------------------------

    def _write(self, event_ids: tuple[str, ...], packets: list[Packet]) -> None:
        for event_id in event_ids:
            for packet in packets:
                if event_id in self._failed or not self._write_one(event_id, packet):
                    break

    def _write_one(self, event_id: str, packet: Packet) -> bool:
        try:
            if event_id not in self._opened:
                if not packet.keyframe:
                    return True  # the clip starts at a keyframe
                if not self._store.begin_mp4_clip(event_id, packet, self._fps, self._wall() - self._monotonic()):
                    self._failed.add(event_id)  # deleted meanwhile: it stays deleted
                    return False
                self._opened.add(event_id)
            elif not self._store.append_mp4_clip(event_id, packet):
                self._failed.add(event_id)  # deleted, or it stopped at the limit
                return False
            self.packets_written += 1
            return True
        except OSError as exc:  # a full or failing card must not stop the camera
            log.error("cannot record the clip of %s: %s", event_id, exc)
            self._failed.add(event_id)
            with contextlib.suppress(OSError, UnknownEvent):
                self._store.finish_clip(event_id)
            return False

    def _finish_all(self, event_ids: list[str]) -> None:
        for event_id in event_ids:
            self._finish(event_id)

    def _finish(self, event_id: str) -> None:
        self._failed.discard(event_id)
        self._opened.discard(event_id)
        record = self._store.finish_clip(event_id)
        if record is not None:
            self._on_saved("clip", record)

    def counters(self) -> dict[str, int]:
        """For ``/api/status``: clips open, video written and dropped, the pre-roll's bytes."""
        with self._lock:
            recording, ring = len(self._open), self._ring.bytes
        return {"recording": recording, "packets_written": self.packets_written,
                "packets_dropped": self._worker.dropped, "pre_roll_bytes": ring}
