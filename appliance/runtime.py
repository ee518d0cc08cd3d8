"""Wires the parts together: the only place that creates hardware objects and threads of the app.

``Appliance`` is what ``python -m appliance`` runs and what end-to-end tests start in-process, with a
backend of their choosing when they need one (a failing camera, a fake Pi camera).
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from appliance import __version__, h264
from appliance.app import create_app
from appliance.arming.control import ArmControl
from appliance.arming.schedule import WeeklySchedule, system_zone
from appliance.camera_backends import CameraBackend, choose_backend
from appliance.capture.broadcaster import FrameBroadcaster
from appliance.capture.encoder import choose_encoder
from appliance.capture.picture import PictureControl, PictureSettingsError
from appliance.capture.pipeline import CapturePipeline
from appliance.config import AppConfig, ConfigError
from appliance.controller import CameraController, StateFile
from appliance.durable import remove_leftovers
from appliance.h264.feed import encode_size
from appliance.health import capture_health
from appliance.history.events import EventRecorder, EventStore
from appliance.motion.control import MotionControl
from appliance.mqtt.bridge import MqttBridge
from appliance.mse.service import H264Viewers
from appliance.onvif.device import Facts, default_route_mac, scopes, serial_number
from appliance.onvif.discovery import DiscoveryResponder
from appliance.onvif.events import MotionEvents
from appliance.onvif.notify import Notifier
from appliance.onvif.service import OnvifService
from appliance.onvif.wsse import TokenCheck
from appliance.panel.gpio import FrontPanel
from appliance.recording.clips import EventClips
from appliance.recording.service import Recordings
from appliance.rtsp import service as rtsp_service
from appliance.state import CameraState
from appliance.web.fanout import StreamFanout
from appliance.web.live import LiveFeed
from appliance.web.security import FailureLimiter, password_check, plain_password
from appliance.web.server import HttpServer
from appliance.web.services import Services

if TYPE_CHECKING:
    from appliance.detection.objects import ObjectNews
    from appliance.detection.worker import DetectionWorker
    from appliance.notify.service import Notifier

log = logging.getLogger(__name__)
H264_STOP_BUDGET = 0.5  # s for the encoder thread, stuck or not, after RTSP's second: stop() keeps to 5 s
DETECTION_STOP_BUDGET = 0.5  # s: one detection in progress ends well within it
FIRST_FRAME_TIMEOUT = 5.0  # s for a new H.264 viewer's first keyframe (asked for at once), else it is dropped
RECORDING_STOP_BUDGET = 1.0  # s for each recorder to write what is queued and finish its files


def build_detection(config: AppConfig, state_dir: Path, on_news: Callable[[ObjectNews], None],
                    zones: Callable[[], Any], monotonic: Callable[[], float] = time.monotonic
                    ) -> DetectionWorker | None:
    """The object detector when ``detection.enabled``: its model loaded and tried, or a ``ConfigError``
    that says what is missing and how to install it. Its modules (and the runtime's 8 MiB) load only here."""
    settings = config.detection
    if not settings.enabled:
        return None
    from appliance.detection.model import ModelError, load_checked
    from appliance.detection.worker import DetectionWorker

    try:
        model = load_checked(settings.model_path(state_dir), settings.labels_path(state_dir), settings.threads)
    except ModelError as exc:
        raise ConfigError(f"invalid configuration:\n  detection: {exc}") from None
    unknown = sorted(set(settings.objects) - set(model.labels.values()))
    if unknown:
        raise ConfigError(f"invalid configuration:\n  detection.objects: the model knows no {', '.join(unknown)} "
                          f"(its labels: {', '.join(sorted(set(model.labels.values())))})")
    log.info("object detection on: %s, %s at %g frames/s at most", model.path.name,
             ", ".join(settings.objects), settings.fps)
    return DetectionWorker(model, settings, on_news, zones=zones, monotonic=monotonic)


def build_notifier(config: AppConfig, arming: ArmControl, page_url: Callable[[], str],
                   clock: Callable[[], float]) -> Notifier | None:
    """The notifier when targets are configured: each URL read (from the file, the environment) and
    checked by Apprise now, so a bad one stops start-up naming the target, never showing the URL."""
    settings = config.notify
    if not settings.targets:
        return None
    from appliance.notify.secrets import Redactor, read_url
    from appliance.notify.sender import TargetSender, apprise_send
    from appliance.notify.service import Notifier

    urls = [read_url(target, index) for index, target in enumerate(settings.targets)]
    redactor = Redactor(urls)
    redactor.install()  # before Apprise sees a URL: it logs them as it loads them
    senders = []
    for index, (target, url) in enumerate(zip(settings.targets, urls, strict=True)):
        try:
            send = apprise_send(url, settings.timeout, redactor)
        except ImportError:
            redactor.uninstall()
            raise ConfigError("invalid configuration:\n  notify: the Python package apprise is missing "
                              "(it is in the locks: scripts/run.sh, or pip install apprise)") from None
        except ValueError as exc:
            redactor.uninstall()
            raise ConfigError(f"invalid configuration:\n  notify.targets.{index} ({target.name}): "
                              f"{redactor(str(exc))}") from None
        senders.append(TargetSender(target, settings, send, clock=clock, redact=redactor))
    log.info("notifications to %s", ", ".join(target.name for target in settings.targets))
    return Notifier(config, arming, senders, redactor, page_url, clock=clock)


class Appliance:
    """All running parts of one appliance; ``start()``/``stop()`` own every thread they create."""

    def __init__(self, config: AppConfig, backend: CameraBackend | None = None,
                 backend_name: str | None = None, monotonic: Callable[[], float] = time.monotonic,
                 pin_factory: Any = None, button_clock: Callable[[], float] = time.monotonic,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock``: wall time for arming's schedule and the notifications (tests set the day and hour)."""
        self.config = config
        if backend is None:
            backend_name, backend = choose_backend(config.camera)
        self.backend_name = backend_name or backend.name
        self.backend = backend
        self.state_dir: Path = config.resolved_state_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.state_dir)  # state.json and motion.json are written here; events/ cleans its own
        self.broadcaster = FrameBroadcaster(config.stream.max_viewers)
        self.motion = MotionControl(config.motion, self.state_dir / "motion.json")
        self.picture = PictureControl(config.picture, self.state_dir / "picture.json", backend.controls)
        try:
            self.picture.check_controls()
        except PictureSettingsError as exc:
            raise ConfigError(f"invalid configuration:\n  picture.controls: {exc}") from None
        self.events = EventStore(self.state_dir / "events", config.events.max_count, config.events.max_bytes,
                                 config.events.min_free_bytes)
        self.live = LiveFeed(config.stream.max_live_clients)
        clip = config.events.clip
        self.recorder = EventRecorder(self.events, on_saved=self.live.on_event_saved, clip_fps=clip.fps,
                                      max_pending=max(4, int(2 * clip.fps)),
                                      keep_motion_events=config.detection.keep_motion_events
                                      or not config.detection.enabled,
                                      armed=lambda: self.arming.poll().armed,
                                      keep_disarmed=config.arming.keep_disarmed_events)
        # Wrong passwords per address, on every port that takes the login (HTTP, RTSP): one limit.
        self.login_failures = FailureLimiter(config.server.auth.max_failures)
        # The one H.264 encode, when a consumer of it is configured; RTSP serves it. Each is off with
        # the reason when a library it needs is missing here.
        self.h264, h264_problem = h264.build(config)
        self.rtsp, self.rtsp_reason = rtsp_service.build(config, self.h264, h264_problem,
                                                         password_check(config.server),
                                                         plain_password(config.server), self.login_failures)
        if self.rtsp_reason is not None:
            log.warning("RTSP is off: %s", self.rtsp_reason)
        # Event clips: MP4 from the one encode when it runs here, else (and by choice) Motion-JPEG.
        self.event_clips: EventClips | None = None
        self.clip_format = "mjpeg"
        if clip.enabled and clip.format != "mjpeg":
            if self.h264 is not None:
                self.clip_format = "mp4"
                self.event_clips = EventClips(self.events, clip, config.rtsp.fps, self.live.on_event_saved,
                                              config.recording.max_pending_bytes, monotonic=monotonic)
            else:
                log.log(logging.ERROR if clip.format == "mp4" else logging.WARNING,
                        "event clips are Motion-JPEG: %s", h264_problem)
        # Continuous recording and timelapses, on the card or a NAS.
        self.recordings: Recordings | None = None
        self.recordings_reason: str | None = None
        wanted = config.recording.continuous.enabled or config.recording.timelapse.enabled
        if wanted and self.h264 is None:
            self.recordings_reason = h264_problem
            log.error("recording is off: %s", h264_problem)
        elif wanted and self.h264 is not None:
            folder = config.recordings_folder()
            if config.recording.folder is None:
                folder.mkdir(parents=True, exist_ok=True)  # the default, beside the events; a NAS folder never
            self.recordings = Recordings(config, folder, self.h264.codec, self.snapshot,
                                         events_folder=self.events.folder, monotonic=monotonic)
            self.events.make_room_first = self.recordings.folder.free_for_events
        # The page's H.264 live view: browsers as one more consumer of the feed (MJPEG where it is off).
        self.h264_viewers: H264Viewers | None = None
        self.h264_view_off: str | None = None
        if config.stream.h264 and self.h264 is None:
            self.h264_view_off = h264_problem
            log.warning("the page's live view is MJPEG only: %s", h264_problem)
        elif config.stream.h264 and self.h264 is not None:
            self.h264_viewers = H264Viewers(
                self.h264, config.stream.max_h264_viewers, config.rtsp.fps, config.rtsp.bitrate,
                stall_timeout=config.server.socket_timeout,
                first_frame_timeout=max(FIRST_FRAME_TIMEOUT, 3 * config.rtsp.keyframe_interval))
        # ONVIF: the config checked that RTSP and the login are configured; RTSP must also run here.
        self.onvif: OnvifService | None = None
        self.onvif_reason: str | None = None
        self.discovery: DiscoveryResponder | None = None
        self.discovery_reason: str | None = None
        if config.onvif.enabled and self.rtsp is None:
            self.onvif_reason = f"RTSP is off: {self.rtsp_reason}"
            log.error("ONVIF is off: %s", self.onvif_reason)
        elif config.onvif.enabled:
            login = password_check(config.server)
            assert login is not None and config.server.auth.username is not None  # the config's rule
            tokens = TokenCheck(config.server.auth.username, login, plain_password(config.server),
                                self.login_failures, clock=clock)
            events = MotionEvents(config.onvif.max_subscriptions,
                                  motion_now=lambda: self.pipeline.stats().motion_active, clock=clock)
            pushes = Notifier(config.onvif.max_subscriptions,
                              motion_now=lambda: self.pipeline.stats().motion_active, clock=clock)
            self.onvif = OnvifService(tokens, events, pushes, clock=clock)
        if self.rtsp is None and self.event_clips is None and self.recordings is None and self.h264_viewers is None:
            self.h264 = None  # nobody would consume it
        # Object detection: its model is loaded and tried now, so a missing or broken one stops start-up.
        self.detection = build_detection(config, self.state_dir, lambda news: self.controller.objects_seen(news),
                                         zones=lambda: self.motion.settings.zones, monotonic=monotonic)
        # Arming (always: the page shows it) and notifications (when targets are configured).
        zone = ZoneInfo(config.arming.timezone) if config.arming.timezone else system_zone()
        self.arming = ArmControl(WeeklySchedule(config.arming.schedule, zone), self.state_dir / "arming.json",
                                 clock=clock)
        self.notifier = build_notifier(config, self.arming, page_url=lambda: self.url, clock=clock)
        self.pipeline = CapturePipeline(backend, config, self.broadcaster, monotonic=monotonic,
                                        motion_settings=lambda: self.motion.settings,
                                        clip_sink=self.recorder if self.clip_format == "mjpeg" else None,
                                        picture=self.picture, video_sink=self.h264, object_sink=self.detection)
        # Clip frames use the encoder the pipeline timed at start-up (named: not timed again).
        self.recorder.encode = choose_encoder(self.pipeline.encoder_name, clip.quality, clip.size)[1]
        self.controller = CameraController(
            self.pipeline, StateFile(self.state_dir / "state.json"),
            start_timeout=config.camera.open_timeout + config.camera.read_timeout, restore=config.camera.restore)
        self.app = create_app(self.controller, self.broadcaster, config, self.backend_name, backend.describe(),
                              self.events, self.live, integrations=self.integrations, motion=self.motion,
                              clip_counters=self.clip_counters, picture=self.picture,
                              login_failures=self.login_failures,
                              recordings=self.recordings.folder if self.recordings is not None else None,
                              arming=self.arming, notifier=self.notifier, h264_viewers=self.h264_viewers,
                              h264_off=self.h264_view_off, onvif=self.onvif)
        web = config.server
        # One thread writes every live stream; each open page's live feed holds a server thread, and
        # API calls (and streams being set up) get their own spares.
        self.streams = StreamFanout(self.broadcaster, keepalive=config.stream.keepalive,
                                    stall_timeout=web.socket_timeout)
        threads = config.stream.max_live_clients + config.server.extra_threads
        self.server = HttpServer(self.app, web.host, web.port, threads=threads, socket_timeout=web.socket_timeout,
                                 request_timeout=web.request_timeout, max_header_bytes=web.max_header_bytes,
                                 max_body_bytes=web.max_body_bytes, max_connections=web.max_connections,
                                 max_connections_per_client=web.max_connections_per_client,
                                 tls=(web.tls.cert_file, web.tls.key_file) if web.tls.cert_file and web.tls.key_file
                                 else None, streams=self.streams)
        self._stoppers: list[Callable[[], Any]] = []
        self.mqtt: MqttBridge | None = None
        if config.mqtt.host:
            self.mqtt = MqttBridge(config.mqtt, self.controller, name=config.name,
                                   model=backend.describe(), page_port=lambda: self.server.port,
                                   snapshot=self.snapshot, stats=self.stats, motion=self.motion,
                                   public_url=config.server.public_url,
                                   clips=self.clip_format if config.events.clip.enabled else None,
                                   picture=self.picture, recording=self.recordings is not None,
                                   objects=tuple(config.detection.objects) if self.detection is not None else (),
                                   arming=self.arming, notifier=self.notifier)
        hold_actions: dict[str, Callable[[], Any]] = {
            "none": lambda: None,
            "snapshot": self.take_snapshot,
            "off": lambda: self.controller.off(source="button"),
            "arm": lambda: self.arming.set(not self.arming.state().armed, source="button"),
        }
        self.panel = FrontPanel(config.gpio, self.controller, hold_actions, pin_factory=pin_factory,
                                clock=button_clock, picture=self.picture)

    @property
    def url(self) -> str:
        host = self.config.server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        return f"{'https' if self.server.tls else 'http'}://{host}:{self.server.port}"

    def start(self) -> None:
        """Restore the saved camera state first (without waiting for the camera), then open the ways
        in: the web server, MQTT and the button, so an early ``off`` from any of them is never undone."""
        self.controller.add_listener(self.live.on_state)
        self.motion.add_listener(self.live.on_motion_settings)
        self.picture.add_listener(self.live.on_picture_settings)
        self.controller.add_motion_listener(self.recorder.on_motion)
        self.controller.add_object_listener(self.recorder.on_objects)
        self._stoppers.append(self.recorder.close)
        self._stoppers.append(self.controller.close)  # last of all: listeners hear the final ``off``
        self.controller.restore()
        self.streams.start()
        self._stoppers.append(self.streams.stop)  # after the server: no stream arrives once it stops
        self.server.start()
        self._stoppers.append(self.server.stop)
        self.arming.start()
        self._stoppers.append(self.arming.stop)
        if self.notifier is not None:
            notifier = self.notifier
            self.controller.add_motion_listener(notifier.on_motion)
            self.controller.add_object_listener(notifier.on_objects)
            self.controller.add_listener(notifier.on_state)
            notifier.start()
            self._stoppers.append(notifier.stop)
        if self.detection is not None:
            detection = self.detection
            detection.start()
            self._stoppers.append(lambda: detection.stop(DETECTION_STOP_BUDGET))
        if self.h264 is not None:
            feed = self.h264
            feed.start()
            self._stoppers.append(lambda: feed.stop(H264_STOP_BUDGET))
        if self.h264_viewers is not None:
            viewers = self.h264_viewers
            self.controller.add_listener(viewers.on_state)  # the camera going off ends the streams
            viewers.start(camera_on=self._camera_on)
            self._stoppers.append(viewers.stop)
        camera_on = self._camera_on
        if self.event_clips is not None and self.h264 is not None:
            clips = self.event_clips
            self.controller.add_listener(clips.on_state)  # first: a state heard wins over the one read
            self.controller.add_motion_listener(clips.on_motion)
            clips.start(self.h264, camera_on)
            self._stoppers.append(lambda: clips.close(RECORDING_STOP_BUDGET))
        if self.recordings is not None and self.h264 is not None:
            recordings = self.recordings
            self.controller.add_listener(recordings.on_state)
            recordings.start(self.h264, camera_on)
            self._stoppers.append(lambda: recordings.stop(RECORDING_STOP_BUDGET))
        if self.rtsp is not None:
            self.controller.add_listener(self.rtsp.on_state)
            self.rtsp.start(camera_on=camera_on)
            self._stoppers.append(self.rtsp.stop)
            if self.onvif is not None:
                onvif = self.onvif
                onvif.facts = self.onvif_facts(self.rtsp.server.port)
                self.controller.add_motion_listener(onvif.events.on_motion)
                self.controller.add_motion_listener(onvif.pushes.on_motion)
                onvif.pushes.start()
                self._stoppers.append(onvif.pushes.stop)
                self._stoppers.append(onvif.events.close)  # waiting PullMessages return before the server stops
                self._start_discovery(onvif.facts)
        self._stoppers.append(self.live.close)  # pages' streams end before the server waits for them
        self._stoppers.append(Services.of(self.app).stopping.set)  # and clip replays
        self._stoppers.append(self.controller.shutdown)
        if self.mqtt is not None:
            if self.recordings is not None:
                self.recordings.folder.on_change = self.mqtt.publish_stats  # a fault is news at once
            self.mqtt.start()
            self._stoppers.append(self.mqtt.stop)  # stopped first: says offline before the camera goes
        if self.panel.start():
            self._stoppers.append(self.panel.close)

    def stop(self) -> None:
        """Release the camera, end streams, stop the server; in reverse order of start.

        Every part bounds its own wait (a camera that hangs, a command in flight, a stalled disk), so
        the whole takes under 5 s in the worst case, below the unit's TimeoutStopSec.
        """
        started = time.monotonic()
        while self._stoppers:
            stopper = self._stoppers.pop()
            began = time.monotonic()
            try:
                stopper()
            except Exception:
                log.exception("error while stopping %r", stopper)
            if time.monotonic() - began > 1.0:
                log.warning("stopping %s took %.1f s", getattr(stopper, "__qualname__", stopper),
                            time.monotonic() - began)
        log.info("stopped in %.1f s", time.monotonic() - started)

    def _start_discovery(self, facts: Facts) -> None:
        """WS-Discovery for ONVIF, when configured; a port that cannot be had leaves ONVIF on without it."""
        settings = self.config.onvif
        if not settings.discovery:
            return
        responder = DiscoveryResponder(f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'appliance:' + facts.serial)}",
                                       scopes(facts), facts.http_port, port=settings.discovery_port)
        try:
            responder.start()
        except OSError as exc:
            self.discovery_reason = f"UDP port {settings.discovery_port} is not free: {exc}"
            log.error("WS-Discovery is off: %s", self.discovery_reason)
            return
        self.discovery = responder
        self._stoppers.append(responder.stop)  # says Bye

    def onvif_facts(self, rtsp_port: int) -> Facts:
        """What ONVIF's answers say of this appliance, its ports known."""
        config = self.config
        width, height = config.camera.size
        turned = (height, width) if config.camera.rotation in (90, 270) else (width, height)
        return Facts(name=config.name, model=self.backend.describe(), firmware=__version__, serial=serial_number(),
                     mac=default_route_mac(), hostname=socket.gethostname(), location=config.onvif.location,
                     http_port=self.server.port, https=self.server.tls, rtsp_port=rtsp_port,
                     rtsp_path=config.rtsp.path, source_size=turned,
                     encode_size=encode_size(config.rtsp, config.stream.size, turned), fps=config.rtsp.fps,
                     bitrate=config.rtsp.bitrate, profile=config.rtsp.profile,
                     gov_length=max(1, round(config.rtsp.fps * config.rtsp.keyframe_interval)))

    def _camera_on(self) -> bool:
        return self.controller.state is CameraState.ON

    def clip_counters(self) -> dict[str, Any]:
        """Event clips for ``/api/status``: their format and what their writer did."""
        counters = self.event_clips.counters() if self.event_clips is not None else self.recorder.counters()
        return {"format": self.clip_format, **counters}

    def snapshot(self) -> bytes | None:
        """A current JPEG for MQTT and the button; None while the camera is off or silent."""
        timeout, max_age = self.config.camera.snapshot_timing()
        return self.broadcaster.snapshot(timeout=timeout, max_age=max_age)

    def take_snapshot(self) -> bytes | None:
        """Snapshot on demand (the button's long press): kept in the history, published to MQTT."""
        jpeg = self.snapshot()
        if jpeg is None:
            log.warning("snapshot requested but the camera is %s", self.controller.state.value)
            return None
        self.recorder.save_snapshot(jpeg, time.time())
        if self.mqtt is not None:
            self.mqtt.publish_snapshot(jpeg)
        return jpeg

    def stats(self) -> dict[str, Any]:
        """The figures MQTT sensors publish periodically."""
        recording = self.recordings.status() if self.recordings is not None else None
        return {"fps": self.pipeline.stats().fps, "viewers": self.broadcaster.viewers,
                "h264_viewers": self.h264_viewers.viewers if self.h264_viewers is not None else 0,
                "state": self.controller.state.value,
                "recording": None if recording is None else "ok" if recording["fault"] is None else "fault",
                "recording_fault": None if recording is None else recording["fault"]}

    def integrations(self) -> dict[str, Any]:
        """MQTT and GPIO as /api/status reports them: the first thing to check when HA shows nothing."""
        mqtt = None if self.mqtt is None else {
            "connected": self.mqtt.connected, "broker": f"{self.config.mqtt.host}:{self.config.mqtt.port}",
            "device_id": self.mqtt.topics.device_id, "topic_prefix": self.mqtt.topics.prefix}
        gpio = {"configured": self.panel.configured, "button": self.panel.button is not None,
                "led": self.panel.led is not None}
        rtsp = self.rtsp.status() if self.rtsp is not None else rtsp_service.off_status(self.rtsp_reason)
        recording = self.recordings.status() if self.recordings is not None else {
            "enabled": False, "reason": self.recordings_reason}
        live_h264 = self.h264_viewers.describe() if self.h264_viewers is not None else {
            "enabled": False, "reason": self.h264_view_off}
        onvif = {"enabled": False, "reason": self.onvif_reason} if self.onvif is None else {
            "enabled": True, "calls": self.onvif.calls, "refused": self.onvif.refused,
            "subscriptions": self.onvif.events.subscriptions, "max_subscriptions": self.onvif.events.max_subscriptions,
            "pushes": self.onvif.pushes.subscriptions, "pushes_dropped": self.onvif.pushes.dropped,
            "discovery": None if self.discovery is None else {"port": self.discovery.port,
                                                              "answered": self.discovery.answered,
                                                              "ignored": self.discovery.ignored},
            "discovery_off": self.discovery_reason}
        return {"mqtt": mqtt, "gpio": gpio, "rtsp": rtsp, "live_h264": live_h264, "onvif": onvif,
                "recording": recording,
                "detection": self.detection_status(),
                "arming": self.arming.poll().public(),
                "notify": {"enabled": False} if self.notifier is None else {"enabled": True, **self.notifier.status()}}

    def detection_status(self) -> dict[str, Any]:
        """Object detection as ``/api/status`` shows it: what it looks with, how hard, what it sees now."""
        if self.detection is None:
            return {"enabled": False}
        stats = self.detection.stats()
        settings = self.config.detection
        return {"enabled": True, "model": self.detection.model.path.name, "labels": list(settings.objects),
                "fps": settings.fps, "region": settings.region, "detections": stats.detections,
                "skipped": stats.skipped, "errors": self.detection.errors, "ms_per_detection": stats.ms_mean,
                "busy_share": stats.busy_share, "counts": stats.counts, "objects": stats.objects}

    def health(self) -> tuple[bool, str]:
        """What the systemd watchdog is fed on: the capture loop, and the web server answering a request."""
        healthy, reason = capture_health(self.controller, self.config.camera.read_timeout,
                                         self.config.camera.open_timeout)
        if not healthy:
            return healthy, reason
        if not self.server.answers():
            return False, "the web server does not answer on loopback"
        problem = self.rtsp.health() if self.rtsp is not None else None  # its loop and the encoder it serves
        if problem is not None:
            return False, problem
        return True, "ok"

    def healthy(self) -> bool:
        return self.health()[0]

    def __enter__(self) -> Appliance:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
