"""Continuous recording and timelapses together: one folder, one disk thread, one status.

``Recordings`` owns the ``recorder`` disk thread (``DiskWorker``) both write on, the catalogue of
the folder, and the two recorders; the appliance starts it with the H.264 feed and stops it within
a budget. Its ``status`` is what ``/api/status``, the page and MQTT show: what is kept, what is
being written, and any fault of the folder (gone, not mounted, read-only, full, or a write that
has not returned for ``stall_seconds``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.config import AppConfig
from appliance.h264.feed import H264Feed
from appliance.recording.continuous import ContinuousRecorder
from appliance.recording.folder import RecordingsFolder
from appliance.recording.timelapse import TimelapseRecorder
from appliance.recording.worker import DiskWorker
from appliance.state import StateChange

log = logging.getLogger(__name__)


class Recordings:
    """Built when continuous recording or timelapses are enabled; ``start`` and ``stop`` own its threads."""

    def __init__(self, config: AppConfig, folder: Path, codec: str, snapshot: Callable[[], bytes | None],
                 events_folder: Path | None = None, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        settings = config.recording
        self.settings = settings
        self._monotonic = monotonic
        self.folder = RecordingsFolder(folder, settings, config.events.min_free_bytes, events_folder=events_folder,
                                       wall=wall)
        self.worker = DiskWorker("recorder", settings.max_pending_bytes, monotonic)
        self.continuous = ContinuousRecorder(self.folder, self.worker, settings, config.rtsp.fps,
                                             config.rtsp.bitrate, monotonic, wall) \
            if settings.continuous.enabled else None
        self.timelapse = TimelapseRecorder(self.folder, self.worker, settings.timelapse, codec, config.rtsp,
                                           snapshot, wall) if settings.timelapse.enabled else None

    def start(self, feed: H264Feed, camera_on: Callable[[], bool]) -> None:
        self.worker.start()
        self.worker.call(self._load)
        if self.continuous is not None:
            self.continuous.start(feed, camera_on)
        if self.timelapse is not None:
            self.timelapse.start()

    def _load(self) -> None:
        try:
            self.folder.load()
        except OSError as exc:  # a NAS that is gone: reported; what is written later is catalogued
            self.folder.report(f"cannot read the recording folder {self.folder.folder}: {exc}")

    def on_state(self, change: StateChange) -> None:
        if self.continuous is not None:
            self.continuous.on_state(change)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop taking video, write what is queued and finish the files within ``timeout``; a disk
        thread stuck on a stalled NAS is left behind."""
        started = self._monotonic()
        if self.timelapse is not None:
            self.timelapse.stop(timeout / 4)
        if self.continuous is not None:
            self.continuous.close()
        self.worker.stop(max(0.0, timeout - (self._monotonic() - started)), last=self._finish_files)

    def _finish_files(self) -> None:
        if self.continuous is not None:
            self.continuous.finish()
        if self.timelapse is not None:
            self.timelapse.finish()

    def flush(self, timeout: float = 10.0) -> bool:
        return self.worker.flush(timeout)

    def status(self) -> dict[str, Any]:
        body = self.folder.summary()
        stalled = self.worker.busy_for()
        if stalled > self.settings.stall_seconds:
            body["fault"] = (f"a write to {self.folder.folder} has not returned for {stalled:.0f} s "
                             "(a stalled disk or NAS)")
        body["continuous"].update({"enabled": self.continuous is not None,
                                   "recording": self.continuous is not None and self.continuous.recording,
                                   "segment_seconds": self.settings.continuous.segment_seconds})
        body["timelapse"].update({"enabled": self.timelapse is not None,
                                  "frames_taken": self.timelapse.frames_taken if self.timelapse else 0,
                                  "interval": self.settings.timelapse.interval})
        body.update({"queued_bytes": self.worker.queued_bytes, "dropped": self.worker.dropped,
                     "faults": self.folder.faults})
        return body
