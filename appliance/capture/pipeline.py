"""The capture thread: read → detect motion → draw overlay → encode once → broadcast.

One ``CapturePipeline`` serves the appliance's whole life; each ``start()`` runs one thread until
``stop()``. The thread opens the backend itself and, when the camera fails, reports ``error``,
closes it, waits with exponential backoff and reopens, reporting ``on`` again once frames flow.
Frames are only drawn and encoded while someone watches or a snapshot is wanted. While motion is
watched, a ``ClipTap`` keeps the clip pre-roll (raw, scaled frames) and hands clip frames to the
event writer, which encodes them; the capture thread itself never encodes a clip frame.

There is never more than one capture thread, and the backend is only ever closed by the thread that
reads it: ``stop()`` asks the thread to end and waits a moment; a thread stuck in a driver is left
to finish on its own, and a ``start()`` meanwhile waits for it (reporting ``error``) until it hands
over as its last act. Every exception from a backend, not only ``CameraError``, is an ``error`` and a
retry, never a dead thread. The thread records what it is doing and since when (``phase``), so
health checks see an ``open()`` or ``read()`` that makes no progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.camera_backends.base import CameraBackend, CameraError, Frame
from appliance.camera_backends.yuv import I420, scaled_copy, size_of
from appliance.capture.broadcaster import FrameBroadcaster
from appliance.capture.clips import ClipSink, ClipTap
from appliance.capture.detect import DetectFrame, ObjectSink
from appliance.capture.encoder import EncodeError, choose_encoder, planes_encoder
from appliance.capture.overlay import draw_overlay
from appliance.capture.picture import PictureControl, PictureStage
from appliance.capture.video import VideoFrame, VideoSink
from appliance.config import AppConfig, Mask, MotionSettings, Zone
from appliance.motion.detector import MotionDetector
from appliance.motion.events import EventChange, MotionEventTracker, MotionResult

log = logging.getLogger(__name__)

StateReport = Callable[[str, "str | None"], None]
"""Called with ``("on", None)`` when frames flow and ``("error", reason)`` when the camera fails."""

MotionReport = Callable[[EventChange, "bytes | None"], None]
"""Called on each event start (with the JPEG of the frame that started it) and end (with None)."""


@dataclass(frozen=True)
class PipelineStats:
    """Counters for ``/api/status`` and the MQTT sensors."""

    frames_captured: int
    frames_encoded: int
    frames_analysed: int
    fps: float
    frame_size: tuple[int, int] | None
    last_frame_age: float | None
    motion_active: bool
    last_event: dict[str, object] | None
    clip_frames_taken: int = 0
    clips_recording: int = 0


class _Run:
    """State of one start()..stop(): the stop flag and the callbacks of its owner."""

    def __init__(self, report_state: StateReport, report_motion: MotionReport) -> None:
        self.stop = threading.Event()
        self.report_state = report_state
        self.report_motion = report_motion
        self.thread: threading.Thread | None = None


class CapturePipeline:
    """Owns the capture thread and the per-frame work; the controller decides when it runs."""

    def __init__(self, backend: CameraBackend, config: AppConfig, broadcaster: FrameBroadcaster,
                 monotonic: Callable[[], float] = time.monotonic,
                 motion_settings: Callable[[], MotionSettings] | None = None,
                 clip_sink: ClipSink | None = None, picture: PictureControl | None = None,
                 video_sink: VideoSink | None = None, object_sink: ObjectSink | None = None) -> None:
        self._backend = backend
        self._objects = object_sink  # the object detector, offered frames while motion is seen
        self._video = video_sink  # the H.264 encoder, fed only while it wants frames
        self._config = config
        # The picture's run-time settings (controls, night mode, masks), read at every frame like motion's.
        self._picture = picture or PictureControl(config.picture, None, backend.controls)
        # Read at every frame: settings changed at run time (MotionControl) apply from the next one.
        self._motion_settings = motion_settings or (lambda: config.motion)
        self._broadcaster = broadcaster
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._frame_cond = threading.Condition()
        self._run: _Run | None = None
        self._thread: threading.Thread | None = None  # the last capture thread, alive or not
        self._phase: tuple[str, float] = ("idle", monotonic())
        self._frame_times: deque[float] = deque(maxlen=30)
        self._frames_captured = 0
        self._frames_encoded = 0
        self._frames_analysed = 0
        self._frame_size: tuple[int, int] | None = None
        self._last_frame_at: float | None = None
        self.encoder_name, self._encode_jpeg = choose_encoder(config.stream.encoder, config.camera.jpeg_quality,
                                                              config.camera.size)
        # A camera's YUV planes are encoded as they are (JPEG is YUV); by OpenCV's encoder only when
        # that is the one asked for (it takes BGR alone), or when simplejpeg is not installed.
        self._encode_planes = planes_encoder(config.stream.encoder, config.camera.jpeg_quality, self._encode_jpeg)
        self._tracker = MotionEventTracker(start_frames=config.motion.start_frames, event_gap=config.motion.event_gap,
                                           max_seconds=config.motion.max_event_seconds)
        self._last_event: dict[str, object] | None = None
        self._stage = PictureStage((config.camera.rotation, config.camera.hflip, config.camera.vflip))
        clip = config.events.clip
        self._clips = ClipTap(clip, config.overlay, clip_sink) if clip_sink is not None and clip.enabled else None

    @property
    def backend(self) -> CameraBackend:
        return self._backend

    # --- lifecycle (called by the controller) --------------------------------------------------

    def start(self, report_state: StateReport, report_motion: MotionReport) -> None:
        """Start a capture thread; it reports through the given callbacks until stopped.

        If the previous thread has not ended yet (stuck in a driver), no second thread starts: the
        run reports ``error`` and the old thread starts it as its last act.
        """
        with self._lock:
            if self._run is not None:
                raise RuntimeError("capture pipeline already running")
            run = _Run(report_state, report_motion)
            self._run = run
            waiting = self._thread is not None and self._thread.is_alive()
            if not waiting:
                self._launch(run)
        self._broadcaster.start()
        if waiting:
            log.warning("the previous capture thread is still %s; starting once it lets go", self._phase[0])
            report_state("error", f"the camera is still held by the previous capture ({self._phase[0]}); "
                                  "it restarts when that ends")

    def _launch(self, run: _Run) -> None:
        """Under the lock: run ``run`` on a new capture thread."""
        run.thread = threading.Thread(target=self._thread_main, args=(run,), name="capture", daemon=True)
        self._thread = run.thread
        run.thread.start()

    def _thread_main(self, run: _Run) -> None:
        try:
            self._loop(run)
        finally:
            self._set_phase("idle")
            with self._lock:
                successor = self._run
                if successor is not None and successor is not run and successor.thread is None:
                    self._launch(successor)  # a start() came while this thread could not end

    def stop(self, timeout: float) -> bool:
        """Stop the capture thread; True if it ended within ``timeout`` (else it ends on its own)."""
        with self._lock:
            run, self._run = self._run, None
        if run is None:
            return True
        run.stop.set()
        self._broadcaster.stop()  # streams end now, not when the backend lets go
        if run.thread is None:
            return True  # it was still waiting for the previous thread
        run.thread.join(timeout)
        if run.thread.is_alive():
            phase, since = self._phase
            log.warning("capture thread still %s after %.1f s; leaving it to end on its own", phase,
                        self._monotonic() - since)
            return False
        return True

    def is_alive(self) -> bool:
        """Whether a capture thread is running (healthz, watchdog)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def wait_stopped(self, timeout: float) -> bool:
        """Block until no capture thread is left (one abandoned by ``stop()`` included), while off."""
        thread = self._thread
        if self._run is None and thread is not None:
            thread.join(timeout)
        return not self.is_alive()

    def waiting(self) -> bool:
        """Whether a started run waits for a previous thread that has not ended."""
        run = self._run
        return run is not None and run.thread is None

    def phase(self) -> tuple[str, float]:
        """What the capture thread is doing (``idle``, ``opening``, ``reading``, ``closing``,
        ``backoff``) and for how many seconds."""
        name, since = self._phase
        return name, self._monotonic() - since

    def _set_phase(self, name: str) -> None:
        self._phase = (name, self._monotonic())

    def wait_for_frames(self, count: int, timeout: float) -> bool:
        """Block until ``count`` frames have been captured in all (or ``timeout``): for tests and benches."""
        with self._frame_cond:
            return self._frame_cond.wait_for(lambda: self._frames_captured >= count, timeout)

    def stats(self) -> PipelineStats:
        """``fps`` is measured over the current session: 0 with no capture loop running (the window is
        also emptied on every failure), so callers need no rule of their own."""
        times = list(self._frame_times) if self._run is not None and self.is_alive() else []
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        age = None if self._last_frame_at is None else self._monotonic() - self._last_frame_at
        return PipelineStats(self._frames_captured, self._frames_encoded, self._frames_analysed, round(fps, 2),
                             self._frame_size,
                             age, self._tracker.current is not None, self._last_event,
                             self._clips.frames_taken if self._clips else 0,
                             self._clips.recording if self._clips else 0)

    # --- the thread ----------------------------------------------------------------------------

    def _loop(self, run: _Run) -> None:
        retry = self._config.retry
        delay = retry.initial
        detector = MotionDetector(self._motion_settings())
        self._frame_times.clear()
        while not run.stop.is_set():
            if self._open(run, delay):
                captured_before = self._frames_captured
                try:
                    self._stream(run, detector, lambda: run.report_state("on", None))
                except CameraError as exc:
                    if not run.stop.is_set():
                        log.warning("camera failed: %s; reopening in %.1f s", exc, delay)
                        run.report_state("error", str(exc))
                except Exception as exc:  # a backend's or our own bug must not kill the loop silently
                    log.exception("capture loop failed")
                    if not run.stop.is_set():
                        run.report_state("error", f"internal error: {_reason(exc)}")
                finally:
                    self._close_backend()
                    detector.reset()
                    self._frame_times.clear()  # the measured fps is of this session, not across an outage
                    self._end_event(run)
                    if self._clips is not None:
                        self._clips.close()
                    if self._objects is not None:
                        self._objects.camera_stopped()
                if self._frames_captured > captured_before:
                    delay = retry.initial  # the camera worked: a new failure starts the backoff anew
            if not run.stop.is_set():
                self._set_phase("backoff")
                run.stop.wait(delay)
                delay = min(delay * 2, retry.maximum)

    def _open(self, run: _Run, delay: float) -> bool:
        """Open the backend; on any failure of it, not only the ones it foresaw, report and close."""
        self._set_phase("opening")
        camera = self._config.camera
        try:
            # The camera takes what of the orientation it does for free; the rest is done per frame.
            self._stage = PictureStage(self._backend.orient(camera.rotation, camera.hflip, camera.vflip))
            self._stage.night.active = self._picture.night_active  # a reopen does not switch night mode
            self._backend.open()
        except Exception as exc:
            reason = _reason(exc)
            log.warning("camera open failed: %s; retrying in %.1f s", reason, delay)
            run.report_state("error", reason)
            self._close_backend()
            return False
        return True

    def _close_backend(self) -> None:
        self._set_phase("closing")
        try:
            self._backend.close()
        except Exception as exc:
            log.warning("closing the camera failed: %s", _reason(exc))

    def _stream(self, run: _Run, detector: MotionDetector, on_first_frame: Callable[[], None]) -> None:
        camera = self._config.camera
        period = 1.0 / self._motion_settings().fps  # motion is analysed at its own rate, not the camera's
        next_analysis = self._monotonic()
        result: MotionResult | None = None  # the latest analysis: its boxes stay on the overlay until the next
        analysed_at: float | None = None
        encode_period = 1.0 / self._config.stream.max_fps
        next_encode = self._monotonic()
        stage, picture = self._stage, self._picture
        applied: dict[str, object] | None = None  # the controls the camera was last given
        first = True
        while not run.stop.is_set():
            self._set_phase("reading")
            frame = self._backend.read(camera.read_timeout)
            if run.stop.is_set():
                return
            _check_frame(frame)
            now = self._monotonic()
            wanted = picture.settings
            if wanted.controls is not applied:  # changed at run time: the camera applies them from now on
                applied = wanted.controls
                try:
                    self._backend.set_controls(wanted.controls)
                except Exception as exc:  # checked against what it offers; a refusal must not stop the camera
                    log.warning("the camera refused its controls %s: %s", wanted.controls, _reason(exc))
            image, gray = stage.apply(frame.image, frame.gray, wanted, now)
            frame = Frame(image=image, timestamp=frame.timestamp, gray=gray)
            if stage.night.active != picture.night_active:
                picture.set_night_active(stage.night.active)
            self._frame_times.append(now)
            self._last_frame_at = now
            with self._frame_cond:
                self._frames_captured += 1
                self._frame_cond.notify_all()
            image = frame.image
            self._frame_size = size_of(image)
            if first:
                on_first_frame()
                first = False
            change: EventChange | None = None
            motion = self._motion_settings()
            if motion is not detector.settings:
                detector.configure(motion)
                if not motion.enabled:  # paused: an event in progress ends now, its boxes go
                    result = None
                    self._end_event(run)
            if motion.enabled and now >= next_analysis:
                # Keep the rate, but after a stall start again from now rather than catch up.
                next_analysis = max(next_analysis + period, now - period)
                # An I420 picture is analysed on its Y plane (when the camera gave no smaller grey image).
                result = detector.detect(image.y if isinstance(image, I420) else image, frame.gray,
                                         None if analysed_at is None else now - analysed_at)
                analysed_at = now
                self._frames_analysed += 1
                change = self._tracker.update(result, frame.timestamp, monotonic=now)
            if self._clips is not None:  # before the stream's overlay is drawn on the frame
                self._clips.offer(frame, result, motion.zones if motion.enabled else (), now, motion.enabled,
                                  wanted.masks)
            if self._objects is not None and result is not None and (result.motion or self._tracker.current) \
                    and self._objects.wants_frame(now):  # the clean frame, before the overlay
                event = self._tracker.current
                self._objects.offer(DetectFrame(image.copy(), frame.timestamp, now, result.boxes,
                                                event.id if event is not None else None))
            if self._video is not None and self._video.wants_frame(now):  # before the overlay, too
                self._offer_video(self._video, frame, result, motion.zones if motion.enabled else (), now,
                                  wanted.masks)
            starting = change is not None and change.kind == "start"
            want_stream = now >= next_encode and self._broadcaster.wants_frames()
            want_still = starting or self._broadcaster.wants_still()
            still = None
            if want_stream:
                next_encode = max(next_encode + encode_period, now - encode_period)
            if want_stream or want_still:
                still = self._encode_and_publish(frame, result, want_stream, want_still)
            if change is not None:
                self._report_event(run, change, still if starting else None)

    @staticmethod
    def _offer_video(video: VideoSink, frame: Frame, result: MotionResult | None, zones: Sequence[Zone],
                     now: float, masks: Sequence[Mask]) -> None:
        """Give the video encoder its own copy of the clean frame, scaled to its size here (one pass)."""
        image = frame.image
        width, height = size_of(image)
        size = video.frame_size((width, height))
        copy = scaled_copy(image, size)
        video.offer(VideoFrame(copy, frame.timestamp, now, result, tuple(zones), (size[0] / width, size[1] / height),
                               tuple(masks)))

    def _encode_and_publish(self, frame: Frame, result: MotionResult | None, want_stream: bool,
                            want_still: bool) -> bytes | None:
        """Encode what is wanted: the stream at ``stream.size``, a still (snapshot, event) at full size;
        one encode serves both when the stream is not scaled. Returns the still, if one was made."""
        image = frame.image
        overlay = self._config.overlay
        motion = self._motion_settings()
        zones = motion.zones if motion.enabled else ()
        target = self._config.stream.size
        width, height = size_of(image)
        if target is None or tuple(target) == (width, height):
            draw_overlay(image, frame.timestamp, result, overlay, zones=zones)
            jpeg = self._encode(image)
            self._broadcaster.publish(jpeg, taken=frame.timestamp)
            return jpeg
        stream = still = None
        if want_stream:  # scaled first, from the clean frame: the overlay is drawn at the stream's size
            small = scaled_copy(image, tuple(target))
            draw_overlay(small, frame.timestamp, result, overlay, scale=(target[0] / width, target[1] / height),
                         zones=zones)
            stream = self._encode(small)
        if want_still:
            draw_overlay(image, frame.timestamp, result, overlay, zones=zones)
            still = self._encode(image)
        self._broadcaster.publish(stream, still, taken=frame.timestamp)
        return still

    def _encode(self, image: np.ndarray | I420) -> bytes:
        try:
            jpeg = self._encode_planes(image) if isinstance(image, I420) else self._encode_jpeg(image)
        except EncodeError as exc:
            raise CameraError(f"JPEG encoding failed: {exc}") from exc
        self._frames_encoded += 1
        return jpeg

    def _report_event(self, run: _Run, change: EventChange, jpeg: bytes | None) -> None:
        self._last_event = change.event.as_dict()
        try:
            run.report_motion(change, jpeg)
        except Exception:  # a listener's bug must not stop the camera
            log.exception("motion listener failed")
        if self._clips is not None:
            if change.kind == "start":
                self._clips.started(change.event.id)
            else:
                self._clips.ended(change.event.id, self._monotonic())

    def _end_event(self, run: _Run) -> None:
        change = self._tracker.finish(time.time())
        if change is not None:
            self._report_event(run, change, None)


def _reason(exc: BaseException) -> str:
    """A camera failure as users read it; the type name says what kind when the message does not."""
    if isinstance(exc, CameraError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _check_frame(frame: object) -> None:
    """A backend that returns garbage fails like one that returns nothing, instead of crashing later."""
    image = getattr(frame, "image", None)
    if isinstance(image, I420):
        data = image.data
        if not (data.dtype == np.uint8 and data.ndim == 2 and data.flags.c_contiguous and data.shape[0] % 3 == 0
                and image.height % 2 == 0 and image.width % 2 == 0 and image.height >= 16 and image.width >= 16):
            raise CameraError(f"the camera delivered a malformed I420 frame (shape {data.shape}, dtype {data.dtype})")
    elif not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            and image.shape[0] >= 16 and image.shape[1] >= 16):
        described = f"shape {getattr(image, 'shape', None)}, dtype {getattr(image, 'dtype', type(image).__name__)}"
        raise CameraError(f"the camera delivered a malformed frame ({described})")
    gray = getattr(frame, "gray", None)
    if gray is not None and not (isinstance(gray, np.ndarray) and gray.dtype == np.uint8 and gray.ndim == 2):
        raise CameraError(f"the camera delivered a malformed grey image (shape {getattr(gray, 'shape', None)})")
