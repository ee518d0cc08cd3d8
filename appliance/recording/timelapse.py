"""Timelapse: one picture every ``interval`` seconds, made into an H.264 MP4 per day (or hour).

The ``timelapse`` thread wakes every ``interval`` (a wait on its stop event, so stopping is
immediate), takes the newest picture of the live stream (with its overlay: the time is on every
frame) while the camera is on, and encodes it with an encoder of its own: the live encode's frames
depend on the frames between them, a timelapse's on the one ``interval`` before. Its packets are
stamped one frame period apart, so the movie plays at ``fps``, and are written on the recordings'
disk thread like any other video: a slow or failing NAS costs timelapse frames, nothing else.

A movie starts with the first frame of each local day (or hour): a user asks for "Tuesday".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from appliance.config import RtspSettings, TimelapseSettings
from appliance.h264.encoder import EncoderUnavailable, H264Encoder, H264Error, Packet
from appliance.h264.mp4 import Mp4Writer
from appliance.recording.folder import RecordingsFolder, timelapse_name
from appliance.recording.worker import DiskWorker

log = logging.getLogger(__name__)

KEYFRAME_EVERY = 2.0  # s of the movie between keyframes: a cut loses at most this much of it


def period_of(moment: float, period: str) -> tuple[int, ...]:
    """The local day (or hour) ``moment`` falls in: a movie holds one."""
    local = time.localtime(moment)
    day = (local.tm_year, local.tm_yday)
    return (*day, local.tm_hour) if period == "hour" else day


class TimelapseRecorder:
    """Owns the ``timelapse`` thread; the files are written by the recordings' disk thread."""

    def __init__(self, folder: RecordingsFolder, worker: DiskWorker, settings: TimelapseSettings, codec: str,
                 video: RtspSettings, snapshot: Callable[[], bytes | None],
                 wall: Callable[[], float] = time.time) -> None:
        self._folder = folder
        self._worker = worker
        self._settings = settings
        self._codec = codec
        # The live encode's profile; the movie's rate, and a keyframe every KEYFRAME_EVERY s of it.
        self._video = video.model_copy(update={"fps": settings.fps, "keyframe_interval": KEYFRAME_EVERY,
                                               "bitrate": max(video.bitrate, 2_000_000)})
        self._snapshot = snapshot
        self._wall = wall
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._encoder: H264Encoder | None = None
        self._period: tuple[int, ...] | None = None
        self._index = 0  # frames in the current movie (this thread's count)
        self.frames_taken = 0
        self.last_error: str | None = None
        # the disk thread's own
        self._current: Mp4Writer | None = None
        self._written = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="timelapse", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))

    def _run(self) -> None:
        while not self._stop.wait(self._settings.interval):
            try:
                self._take()
            except Exception as exc:  # a bug of ours: logged, and the next frame tries again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("timelapse frame failed")
                self._encoder = None

    def _take(self) -> None:
        jpeg = self._snapshot()
        if jpeg is None:
            return  # the camera is off or silent: no frame this time
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return
        now = self._wall()
        size = (image.shape[1] // 2 * 2, image.shape[0] // 2 * 2)
        image = np.ascontiguousarray(image[:size[1], :size[0]])
        period = period_of(now, self._settings.period)
        fresh = self._encoder is None or self._encoder.size != size or period != self._period
        if fresh:
            try:
                self._encoder = H264Encoder(self._codec, size, self._video)
            except EncoderUnavailable as exc:
                self.last_error = str(exc)
                log.error("timelapse: %s", exc)
                self._encoder = None
                return
            self._period, self._index = period, 0
        assert self._encoder is not None
        stamp = self._index / self._settings.fps
        try:
            packets = self._encoder.encode(image, round(stamp * 90_000), keyframe=fresh, captured_at=stamp)
        except H264Error as exc:
            self.last_error = str(exc)
            self._encoder = None
            return
        self._index += 1
        self.frames_taken += 1
        for packet in packets:
            self._worker.offer(partial(self._write, packet, now - stamp, fresh and packet.keyframe),
                               len(packet.data))

    # --- the disk thread -------------------------------------------------------------------------

    def _write(self, packet: Packet, wall_offset: float, starts_movie: bool) -> None:
        if starts_movie:
            self.finish()
        if self._current is None:
            if not starts_movie and not packet.keyframe:
                return
            problem = self._folder.unwritable()
            if problem is not None:
                self._folder.report(problem)
                return
            try:
                path = self._folder.part_path(timelapse_name(packet.captured_at + wall_offset))
                self._current = Mp4Writer(path, packet, self._settings.fps, wall_offset)
            except OSError as exc:
                self._folder.report(f"cannot start a timelapse: {exc}")
            return
        try:
            self._current.append(packet)
        except OSError as exc:
            writer, self._current = self._current, None
            self._folder.give_up(writer)
            self._folder.report(f"cannot write {writer.path.name}: {exc}")

    def finish(self) -> None:
        """The movie in progress becomes a finished file (the disk thread, or the worker's last job)."""
        writer, self._current = self._current, None
        if writer is None:
            return
        try:
            self._folder.finished("timelapse", writer, timelapse_name(writer.started_at, writer.frames),
                                  writer.frames / self._settings.fps, writer.frames)
        except OSError as exc:
            self._folder.give_up(writer)
            self._folder.report(f"cannot finish {writer.path.name}: {exc}")
