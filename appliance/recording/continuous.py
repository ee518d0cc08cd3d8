"""Continuous recording: every frame of the one H.264 encode, in segments of ``segment_seconds``.

A segment ends at the first keyframe after its length, and that keyframe starts the next, so one
follows another with no frame lost between them. Each is fragmented MP4 (a fragment per keyframe
interval): a power cut or ``kill -9`` loses at most the fragment being filled, and start-up trims
the file to its last whole one (``RecordingsFolder.load``).

When the disk refuses a write (gone, read-only, full, an I/O error) the segment is given up as far
as it plays, the fault is reported, and a new segment is tried at a keyframe after
``retry_seconds``; on a full disk the oldest footage goes first and the try is at once. When the disk
is slow and video is dropped before it, the segment ends there and the next starts at a keyframe:
a gap in the timeline, never a file that does not decode.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from functools import partial

from appliance.config import RecordingSettings
from appliance.h264.encoder import Packet
from appliance.h264.feed import H264Feed
from appliance.h264.mp4 import Mp4Writer
from appliance.recording.folder import RecordingsFolder, segment_name
from appliance.recording.subscription import CameraSubscription
from appliance.recording.worker import DiskWorker
from appliance.state import StateChange

log = logging.getLogger(__name__)

_FULL = (errno.ENOSPC, errno.EDQUOT)


class ContinuousRecorder:
    """A consumer of the H.264 feed whose files are written on the recordings' disk thread."""

    def __init__(self, folder: RecordingsFolder, worker: DiskWorker, settings: RecordingSettings, fps: float,
                 bitrate: int, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._folder = folder
        self._worker = worker
        self._settings = settings
        self._fps = fps
        self._segment_bytes = int(bitrate / 8 * settings.continuous.segment_seconds * 1.5)
        self._monotonic = monotonic
        self._wall = wall
        self._video = CameraSubscription()
        self._dropping = False  # encoder thread: video was dropped, the rest waits for a keyframe
        # the disk thread's own
        self._current: Mp4Writer | None = None
        self._retry_at = 0.0
        self.segments_written = 0

    @property
    def recording(self) -> bool:
        return self._current is not None

    def start(self, feed: H264Feed, camera_on: Callable[[], bool]) -> None:
        """Subscribe, wanting video if the camera is on; a state heard already (``on_state`` is
        added as a listener first) is newer than ``camera_on`` and wins."""
        self._video.start(feed, self._on_packet, camera_on)

    def on_state(self, change: StateChange) -> None:
        if not self._video.on_state(change):  # the segment ends with the last frame
            self._worker.call(self.finish)

    def close(self) -> None:
        """No more video; what is queued is written and the segment closed by the worker's ``last``."""
        self._video.close()

    # --- the encoder thread ----------------------------------------------------------------------

    def _on_packet(self, packet: Packet) -> None:
        if self._dropping and not packet.keyframe:
            return
        after_gap, self._dropping = self._dropping, False
        if not self._worker.offer(partial(self._write, packet, after_gap), len(packet.data)):
            self._dropping = True

    # --- the disk thread -------------------------------------------------------------------------

    def _write(self, packet: Packet, after_gap: bool) -> None:
        current = self._current
        # Half a frame early still counts: the keyframe due at the segment's length may come a hair before it.
        length = self._settings.continuous.segment_seconds - 0.5 / self._fps
        if current is not None and (after_gap or current.size != packet.size or (
                packet.keyframe and packet.captured_at - current.first_at >= length)):
            if after_gap:
                log.warning("recording: the disk fell behind and video was dropped; a new segment starts")
            self.finish()
            current = self._current
        if current is None:
            if packet.keyframe and self._monotonic() >= self._retry_at:
                self._open(packet)
            return
        try:
            current.append(packet)
        except OSError as exc:
            self._failed(current, exc)

    def _open(self, packet: Packet) -> None:
        problem = self._folder.unwritable()
        if problem is not None:
            self._fault(problem)
            return
        offset = self._wall() - self._monotonic()
        name = segment_name(packet.captured_at + offset)
        try:
            if not self._folder.prune(needed=self._segment_bytes):
                self._fault(f"the disk of {self._folder.folder} is full: no room for a segment above the "
                            "free-space floor (events.min_free_bytes), and no footage left to remove")
                return
            path = self._folder.part_path(name)
            self._current = Mp4Writer(path, packet, self._fps, offset)
        except OSError as exc:
            self._fault(f"cannot start {name}: {exc}", full=exc.errno in _FULL)
            return
        self._folder.recovered()

    def finish(self) -> None:
        """The segment being written is finished and named (the disk thread, or its last job)."""
        writer, self._current = self._current, None
        if writer is None:
            return
        try:
            self._folder.finished("continuous", writer, segment_name(writer.started_at, writer.seconds),
                                  writer.seconds)
            self.segments_written += 1
        except OSError as exc:
            self._failed(writer, exc)

    def _failed(self, writer: Mp4Writer, exc: OSError) -> None:
        """The disk refused: the segment is kept as far as it plays, and the fault reported."""
        self._current = None
        self._folder.give_up(writer)
        self._fault(f"cannot write {writer.path.name}: {exc}", full=exc.errno in _FULL)

    def _fault(self, problem: str, full: bool = False) -> None:
        # A full disk whose oldest footage could go is tried again at the next keyframe; anything
        # else after retry_seconds.
        if full and self._folder.make_room(self._segment_bytes):
            log.warning("recording: the disk was full; the oldest footage made room")
            self._retry_at = 0.0
            return
        self._folder.report(problem)
        self._retry_at = self._monotonic() + self._settings.retry_seconds
