"""Typed, validated configuration: YAML file, then environment, then command-line flags.

Every section is a pydantic model with ``extra="forbid"`` so a typo in the file is an error that
names the key at start-up instead of a silent default. Precedence, lowest first: defaults, the
YAML file, ``APPLIANCE_<SECTION>__<KEY>`` environment variables, command-line flags.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "APPLIANCE_"


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key, the value and why."""


def _parse_size(value: Any) -> Any:
    """Accept ``"1280x720"`` as well as ``[1280, 720]`` so YAML, env and flags all read naturally."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
        if not match:
            raise ValueError("expected WIDTHxHEIGHT, e.g. 1280x720")
        return (int(match.group(1)), int(match.group(2)))
    return value


Size = Annotated[tuple[Annotated[int, Field(ge=16, le=7680)], Annotated[int, Field(ge=16, le=4320)]],
                 BeforeValidator(_parse_size)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticSettings(Section):
    """The demo camera's scene: objects move for ``motion_duration`` s of every ``motion_period`` s."""

    seed: int = 0
    objects: int = Field(3, ge=0, le=20)
    motion_period: float = Field(30.0, gt=0)
    motion_duration: float = Field(6.0, ge=0)

    @model_validator(mode="after")
    def _duration_fits(self) -> SyntheticSettings:
        if self.motion_duration > self.motion_period:
            raise ValueError("motion_duration must not exceed motion_period")
        return self


class CameraSettings(Section):
    """Which camera, at what size and rate, and how long a frame may take before it counts as failed."""

    backend: Literal["auto", "synthetic", "opencv", "picamera2"] = "auto"
    device: str | None = Field(
        None, description="opencv: index, /dev/videoN, file or URL; picamera2: camera number")
    size: Size = (1280, 720)
    fps: float = Field(15.0, gt=0, le=120)
    read_timeout: float = Field(5.0, gt=0, le=120)
    open_timeout: float = Field(10.0, gt=0, le=300, description="s an open may take before it counts as hung")
    restore: Literal["last", "on", "off"] = Field(
        "last", description="state after a restart; last: as before (on if the state file is unreadable)")
    loop_file: bool = True
    jpeg_quality: int = Field(80, ge=10, le=100)
    buffer_count: int = Field(4, ge=2, le=16, description="picamera2: frame buffers (each a frame of CMA memory)")
    rotation: Literal[0, 90, 180, 270] = Field(0, description="degrees clockwise, after the flips")
    hflip: bool = False
    vflip: bool = False
    synthetic: SyntheticSettings = SyntheticSettings()

    def snapshot_timing(self) -> tuple[float, float]:
        """``(timeout, max_age)`` for a snapshot: a frame younger than two periods counts as current,
        else wait for the next one as long as a read may take."""
        period = 1.0 / self.fps
        return self.read_timeout + period, 2 * period


class Polygon(Section):
    """An area of the picture, in fractions of its width and height (so it survives a size change)."""

    name: str = Field("area", min_length=1, max_length=40)
    points: list[tuple[float, float]] = Field(min_length=3, max_length=32)

    @field_validator("points")
    @classmethod
    def _inside_the_frame(cls, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for x, y in points:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"point ({x:g}, {y:g}) is outside the frame: x and y are fractions from 0 to 1")
        return points


class Zone(Polygon):
    """A motion zone: an area motion detection ignores (``exclude``) or the only areas it watches."""

    name: str = Field("zone", min_length=1, max_length=40)
    mode: Literal["exclude", "include"] = "exclude"
    labels: list[str] = Field(default_factory=list, max_length=16, description=(
        "object detection: the labels this zone is about (an include zone counts only these there; an "
        "exclude zone ignores only these); empty: every label"))


class Mask(Polygon):
    """A privacy mask: an area filled black before anything sees the frame (stream, snapshots, events,
    clips, MQTT), in fractions of the picture as it is shown (after rotation and flips)."""

    name: str = Field("mask", min_length=1, max_length=40)


SENSITIVITY = {"low": 32, "medium": 20, "high": 12}
"""The named sensitivity levels and the pixel threshold each stands for (lower finds fainter change)."""


class MotionSettings(Section):
    """Parameters of the motion detector (``appliance.motion.detector``) and of event hysteresis."""

    enabled: bool = True
    fps: float = Field(5.0, gt=0, le=120, description="frames analysed per second, whatever the camera delivers")
    width: int = Field(320, ge=64, le=1920)
    blur: int = Field(5, ge=1, le=99)
    background_weight: float = Field(0.05, gt=0, le=1, description="weight of a new frame at 30 frames/s")
    threshold: int = Field(SENSITIVITY["medium"], ge=1, le=254)
    lightswitch: float = Field(0.4, gt=0, le=1, description="a change over more of the frame is light, not motion")
    min_area: float = Field(0.002, ge=0, le=1, description="fraction of the frame that must change")
    warmup_frames: int = Field(10, ge=0, description="analysed frames that learn the background first")
    start_frames: int = Field(3, ge=1, description="consecutive analysed frames with motion that start an event")
    event_gap: float = Field(5.0, gt=0, description="seconds without motion that end an event")
    max_event_seconds: float = Field(300.0, ge=10, description="an event this long ends; the next starts at once")
    zones: list[Zone] = Field(default_factory=list, max_length=16)

    @field_validator("blur")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd (a Gaussian kernel size)")
        return value

    @property
    def sensitivity(self) -> str:
        """The named level ``threshold`` stands for, or ``custom``."""
        return next((name for name, value in SENSITIVITY.items() if value == self.threshold), "custom")


class OverlaySettings(Section):
    """What is drawn on the streamed frames (detection always sees the clean frame)."""

    timestamp: bool = True
    timestamp_format: str = "%Y-%m-%d %H:%M:%S"
    motion_boxes: bool = True
    zones: bool = True


class StreamSettings(Section):
    """The live view: limits of the MJPEG stream, and the page's H.264 view (``appliance/mse/``)."""

    max_viewers: int = Field(16, ge=1, le=256)
    max_fps: float = Field(30.0, gt=0, le=120, description="frames encoded per second for viewers, at most")
    size: Size | None = Field(None, description="the stream scaled to WxH; snapshots and events stay full size")
    encoder: Literal["auto", "opencv", "simplejpeg"] = Field(
        "auto", description="JPEG encoder; auto: the fastest installed one, timed at start-up")
    max_live_clients: int = Field(8, ge=1, le=64, description="open pages following state changes")
    h264: bool = Field(True, description="the page plays the live view in H.264 (the one encode, rtsp.size/fps/"
                       "bitrate) where the browser can, MJPEG where it cannot")
    max_h264_viewers: int = Field(8, ge=1, le=64, description="browsers watching in H.264 at once; more get 503")
    keepalive: float = Field(2.0, gt=0, le=30, description="resend the last frame after this many s")


class RtspSettings(Section):
    """The H.264 stream over RTSP (``appliance/rtsp/``): off unless enabled; encoded only while watched."""

    enabled: bool = False
    port: int = Field(8554, ge=0, le=65535, description="RTSP port (TCP); 0: any free port (tests)")
    path: str = Field("/live", description="the stream's path: rtsp://HOST:PORT/PATH")
    size: Size | None = Field(None, description="WxH of the H.264 picture; default: stream.size, else camera.size")
    fps: float = Field(15.0, gt=0, le=60, description="H.264 frames per second, at most the camera's")
    bitrate: int = Field(1_500_000, ge=100_000, le=50_000_000, description="bits per second the encoder aims at")
    keyframe_interval: float = Field(1.0, ge=0.2, le=10, description="s between keyframes: how soon a client starts")
    profile: Literal["baseline", "main", "high"] = Field("main", description="H.264 profile; never B-frames")
    encoder: Literal["auto", "libx264", "h264_v4l2m2m"] = Field(
        "auto", description="auto: the Pi's hardware encoder where there is one, else libx264")
    max_clients: int = Field(10, ge=1, le=64, description="RTSP clients watching at once; more get 503")
    session_timeout: int = Field(20, ge=2, le=300, description="s: a client sending nothing this long is dropped")
    max_connections: int = Field(32, ge=2, le=1024, description="open RTSP connections at once, all clients")
    max_connections_per_client: int = Field(8, ge=1, le=256, description="open RTSP connections from one address")
    request_timeout: float = Field(10.0, gt=0, le=120,
                                   description="s for a connection to set up a session, else it is closed")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*", value):
            raise ValueError("must start with / and hold only letters, digits and ._~- (e.g. /live)")
        return value

    @field_validator("size")
    @classmethod
    def _even(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and (value[0] % 2 or value[1] % 2):
            raise ValueError("H.264 needs an even width and height")
        return value


class OnvifSettings(Section):
    """ONVIF (``appliance/onvif/``): found and added like a store-bought IP camera. Off unless enabled;
    needs RTSP and the login with its password itself (``server.auth.password_file``)."""

    enabled: bool = False
    location: str = Field("home", min_length=1, max_length=64, description="the location scope clients show")
    max_subscriptions: int = Field(4, ge=1, le=32, description="motion event subscriptions at once, of each kind")
    discovery: bool = Field(True, description="answer WS-Discovery Probes (UDP 3702): clients find the camera")
    discovery_port: int = Field(3702, ge=0, le=65535, description="WS-Discovery's port; 0: any free one (tests)")


class AuthSettings(Section):
    """Optional HTTP Basic authentication: on when ``username`` is set.

    The password is given either as ``password_hash`` (``python -m appliance hash-password`` prints
    one) or as ``password_file``, a file holding the password itself.
    """

    username: str | None = Field(None, min_length=1, max_length=64)
    password_hash: SecretStr | None = None
    password_file: Path | None = None
    realm: str = Field("Camera appliance", min_length=1, max_length=64)
    max_failures: int = Field(5, ge=1, le=1000, description="wrong passwords per address per minute, then 429")

    @field_validator("username", "realm")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and (":" in value or '"' in value or not value.isprintable()):
            raise ValueError("may not contain ':', '\"' or control characters")
        return value

    @field_validator("password_hash")
    @classmethod
    def _known_hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from appliance.passwords import check_hash_format  # no cycle: passwords imports nothing of ours

            check_hash_format(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _one_password(self) -> AuthSettings:
        given = (self.password_hash is not None) + (self.password_file is not None)
        if self.username is not None and given != 1:
            raise ValueError("with a username, set exactly one of password_hash and password_file")
        if self.username is None and given:
            raise ValueError("a password is set but no username: set username to turn authentication on")
        return self

    @property
    def enabled(self) -> bool:
        return self.username is not None


class HttpsSettings(Section):
    """HTTPS with the server's own TLS support: on when both files are set."""

    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _both(self) -> HttpsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class ServerSettings(Section):
    """Where the HTTP server listens, who may talk to it, and what one client may cost."""

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    extra_threads: int = Field(8, ge=2, le=64, description="threads for API calls beyond the viewers")
    socket_timeout: float = Field(10.0, gt=0, description="a viewer that stops reading is dropped after")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names beyond IP literals, localhost and this machine's name; '*': any")
    auth: AuthSettings = AuthSettings()
    tls: HttpsSettings = HttpsSettings()
    request_timeout: float = Field(10.0, gt=0, le=120, description="s to send a whole request (headers and body)")
    max_header_bytes: int = Field(16384, ge=1024, le=1048576)
    max_body_bytes: int = Field(65536, ge=1024, le=16777216)
    max_connections: int = Field(512, ge=8, le=65536, description="open connections at once, all clients")
    max_connections_per_client: int = Field(64, ge=2, le=4096, description="open connections from one address")
    public_url: str | None = Field(
        None, description="the address others reach the page at (links in MQTT messages); default: found")

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be an http:// or https:// address, e.g. http://camera.local:8000")
        return None if value is None else value.rstrip("/")

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != "*" and not re.fullmatch(r"(\*\.)?[A-Za-z0-9._-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?",
                                               name):
                raise ValueError(f"{name!r} is not a host name (optionally *.suffix or :port), nor '*'")
        return [name.lower().rstrip(".") for name in value]


class RetrySettings(Section):
    """Backoff of camera reopen attempts after a failure."""

    initial: float = Field(0.5, gt=0)
    maximum: float = Field(30.0, gt=0)


MAX_PRE_ROLL_BYTES = 64 * 1024 * 1024
"""The pre-roll ring keeps raw frames (no encode while nothing moves): this bounds its memory."""


class ClipSettings(Section):
    """The clip each motion event records: from ``pre_seconds`` before its start to ``post_seconds``
    after its end. ``mp4``: H.264 from the one encode (its size, rate and bitrate are ``rtsp.*``'s),
    with a pre-roll of encoded frames; ``mjpeg``: JPEG frames at ``fps`` and at most ``size``, kept
    raw in the pre-roll (the camera's shape is kept, never enlarged); ``auto``: MP4 when PyAV can
    encode H.264 here, else Motion-JPEG."""

    enabled: bool = True
    format: Literal["auto", "mp4", "mjpeg"] = Field("auto", description="mp4 plays on phones; mjpeg needs no PyAV")
    pre_seconds: float = Field(3.0, ge=0, le=30)
    post_seconds: float = Field(3.0, ge=0, le=60)
    fps: float = Field(10.0, gt=0, le=30, description="frames kept per second (at most the camera's)")
    size: Size = Field((640, 360), description="largest WxH of a clip frame")
    quality: int = Field(75, ge=10, le=100, description="JPEG quality of clip frames")
    max_viewers: int = Field(4, ge=1, le=32, description="clips replayed at once (each holds a server thread)")

    @model_validator(mode="after")
    def _ring_fits(self) -> ClipSettings:
        if self.format == "mp4":  # its pre-roll is encoded: kilobytes a second
            return self
        width, height = self.size
        ring = math.ceil(self.pre_seconds * self.fps) * width * height * 3
        if ring > MAX_PRE_ROLL_BYTES:
            raise ValueError(f"the pre-roll would hold {ring // 2**20} MiB of raw frames (pre_seconds x fps x "
                             f"size); keep it under {MAX_PRE_ROLL_BYTES // 2**20} MiB with a lower fps, size or "
                             "pre_seconds")
        return self


DEFAULT_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
DEFAULT_LABELS = "coco_labels.txt"


class ObjectRule(Section):
    """When a detected object of one label counts: its score and its size in the frame."""

    min_score: float = Field(0.5, gt=0, le=1, description="a detection scoring less is not this object")
    threshold: float = Field(0.7, gt=0, le=1, description="an object alerts once its median score reaches this")
    min_area: float = Field(0.001, ge=0, le=1, description="fraction of the frame its box must cover, at least")
    max_area: float = Field(0.9, gt=0, le=1, description="a box covering more of the frame is not this object")


def _default_objects() -> dict[str, ObjectRule]:
    return {label: ObjectRule() for label in ("person", "car", "dog", "cat")}


class DetectionSettings(Section):
    """Object detection (``appliance/detection/``): an SSD TFLite model run where and while motion is
    seen, at most ``fps`` frames a second, on its own thread; off unless enabled and a model installed."""

    enabled: bool = False
    model: Path | None = Field(None, description=f"TFLite SSD model; default: <state_dir>/models/{DEFAULT_MODEL} "
                                                 "(python -m appliance install-model)")
    labels: Path | None = Field(None, description=f"its labels, 'id name' a line; default: beside it, {DEFAULT_LABELS}")
    fps: float = Field(3.0, gt=0, le=30, description="frames detected per second at most, while motion is seen")
    threads: int = Field(1, ge=1, le=4, description="CPU threads the model runs on")
    region: Literal["motion", "frame"] = Field(
        "motion", description="motion: a square around the moving area, at full resolution; frame: the whole frame")
    objects: dict[str, ObjectRule] = Field(default_factory=_default_objects, max_length=90,
                                           description="the labels that make an alert, and their rules")
    stationary_seconds: float = Field(10.0, ge=1, le=3600,
                                      description="an object whose box stays put this long is stationary")
    lost_seconds: float = Field(3.0, gt=0, le=60, description="an object not seen for this long is gone")
    keep_motion_events: bool = Field(True, description="keep events in which no wanted object was seen")

    @field_validator("objects")
    @classmethod
    def _named(cls, objects: dict[str, ObjectRule]) -> dict[str, ObjectRule]:
        for label in objects:
            if not re.fullmatch(r"[a-z][a-z0-9 _-]{0,39}", label):
                raise ValueError(f"label {label!r}: lower-case letters, digits, space, '_' or '-' (as in the model)")
        return objects

    def model_path(self, state_dir: Path) -> Path:
        return self.model or state_dir / "models" / DEFAULT_MODEL

    def labels_path(self, state_dir: Path) -> Path:
        return self.labels or self.model_path(state_dir).with_name(DEFAULT_LABELS)


NOTIFY_EVENTS = ("start", "end", "fault", "back", "test")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class NotifyTarget(Section):
    """One place alerts go, as an Apprise URL (``mailto://``, ``tgram://``, ``ntfy://``, ``json://``, ...).
    The URL holds secrets: give it in the file (``url``, redacted everywhere), or better as ``url_file``
    (a file holding it) or ``url_env`` (an environment variable holding it)."""

    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _-]*$")
    url: SecretStr | None = None
    url_file: Path | None = None
    url_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    events: list[Literal["start", "end", "fault", "back"]] = Field(
        default_factory=lambda: ["start"], description="start (with the snapshot), end (with the clip's link), "
                                                        "fault (the camera failed), back (it works again)")
    labels: list[str] = Field(default_factory=list, description=(
        "object detection: tell only when an object of these labels alerts (with its picture); empty: any motion"))
    title: str = Field("{camera}: {what}", max_length=200)
    body: str = Field("{what} at {time}.\n{link}", max_length=2000)
    attach: bool = Field(True, description="attach the event's snapshot (or the object's picture)")
    cooldown: float = Field(300.0, ge=0, le=86400,
                            description="s after a message in which further events are summed up, not sent")

    @model_validator(mode="after")
    def _one_url(self) -> NotifyTarget:
        given = (self.url is not None) + (self.url_file is not None) + (self.url_env is not None)
        if given != 1:
            raise ValueError("give exactly one of url, url_file and url_env")
        return self


class NotifySettings(Section):
    """Notifications by Apprise (``appliance/notify/``): sent on their own threads, one per target, only
    while armed (``arming``); a slow or dead service never holds anything else up."""

    targets: list[NotifyTarget] = Field(default_factory=list, max_length=16)
    queue: int = Field(8, ge=1, le=256, description="messages waiting per target; beyond it the oldest goes")
    timeout: float = Field(15.0, gt=0, le=300, description="s one send may take before it counts as failed")
    retries: int = Field(3, ge=0, le=10, description="tries again after a failure, waiting longer each time")
    retry_delay: float = Field(5.0, gt=0, le=600, description="s before the first retry, doubling each time")

    @field_validator("targets")
    @classmethod
    def _distinct(cls, targets: list[NotifyTarget]) -> list[NotifyTarget]:
        names = [target.name for target in targets]
        if len(names) != len(set(names)):
            raise ValueError("target names must differ")
        return targets


def _clock_time(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d|24:00", value):
        raise ValueError("expected HH:MM, 00:00 to 24:00")
    return value


ClockTime = Annotated[str, BeforeValidator(_clock_time)]


class ArmedSpan(Section):
    """A weekly span in which the appliance is armed: from ``start`` on each of ``days`` to ``end``, the
    next day when ``end`` is not later than ``start`` (22:00 to 06:30 is one night)."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: ClockTime = "00:00"
    end: ClockTime = "24:00"


class ArmingSettings(Section):
    """Whether events notify (and, if wanted, are kept): armed by a weekly schedule, or by hand (the page,
    the API, Home Assistant, the button) until the schedule's next change; kept across restarts."""

    schedule: list[ArmedSpan] = Field(default_factory=list, max_length=32, description=(
        "the spans armed, in the appliance's time zone; empty: armed unless disarmed by hand"))
    timezone: str | None = Field(None, description="IANA name, e.g. Europe/Berlin; default: the system's")
    keep_disarmed_events: bool = Field(True, description=(
        "false: a motion event that starts while disarmed is deleted at its end (Home Assistant still hears it)"))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value


class EventsSettings(Section):
    """Bounds of the motion history kept on disk (snapshots and clips together)."""

    max_count: int = Field(500, ge=1)
    max_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    min_free_bytes: int = Field(64 * 1024 * 1024, ge=0,
                                description="free space the history and the recordings leave on their disks")
    clip: ClipSettings = ClipSettings()


class ContinuousSettings(Section):
    """Everything the camera sees, in fragmented MP4 segments, in folders by day; the oldest goes
    first when ``keep_days`` or ``max_bytes`` runs out, or when the disk is down to its floor."""

    enabled: bool = False
    segment_seconds: float = Field(60.0, ge=2, le=3600, description="s per file; a file ends at a keyframe")
    keep_days: float = Field(7.0, gt=0, le=3650)
    max_bytes: int = Field(8 * 1024**3, ge=1024 * 1024)


class TimelapseSettings(Section):
    """One frame every ``interval`` seconds, made into an H.264 MP4 per day (or hour) that plays at ``fps``."""

    enabled: bool = False
    interval: float = Field(10.0, ge=1, le=3600, description="s between two frames of the timelapse")
    fps: float = Field(25.0, gt=0, le=60, description="frames per second the movie plays at")
    period: Literal["day", "hour"] = "day"
    keep_days: float = Field(30.0, gt=0, le=3650)


class RecordingSettings(Section):
    """Continuous recording and timelapses: where they go and what happens when that place fails.

    ``folder`` may be a NAS share the system mounts (NFS, SMB); with ``require_mount`` nothing is
    written unless it is a mount point, so a share that did not mount never fills the SD card.
    """

    folder: Path | None = Field(None, description="default: <state_dir>/recordings")
    require_mount: bool = Field(False, description="write only while the folder is a mount point (a NAS share)")
    max_pending_bytes: int = Field(8 * 1024 * 1024, ge=256 * 1024, le=256 * 1024 * 1024,
                                   description="video waiting for a slow disk; beyond it, frames are dropped")
    stall_seconds: float = Field(10.0, gt=0, le=600, description="a write this long is reported as a stall")
    retry_seconds: float = Field(5.0, gt=0, le=600, description="s between tries while the folder fails")
    continuous: ContinuousSettings = ContinuousSettings()
    timelapse: TimelapseSettings = TimelapseSettings()


class TlsSettings(Section):
    """TLS towards the broker; ``ca_file`` unset means the system's CA store."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


class MqttSettings(Section):
    """MQTT and Home Assistant discovery; disabled while ``host`` is unset."""

    host: str | None = None
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: TlsSettings = TlsSettings()
    client_id: str | None = None
    device_id: str | None = None
    device_name: str | None = None
    topic_prefix: str | None = None
    discovery_prefix: str = "homeassistant"
    discovery: bool = True
    keepalive: int = Field(30, ge=5, le=3600)
    reconnect_min: int = Field(1, ge=1, description="s; paho's backoff takes whole seconds")
    reconnect_max: int = Field(60, ge=1)
    stats_interval: float = Field(30.0, gt=0, description="seconds between fps/viewer sensor updates")
    command_interval: float = Field(1.0, ge=0, le=60, description="s between two camera switches from MQTT")
    snapshot_interval: float = Field(2.0, ge=0, le=3600, description="s between two snapshots on request")

    @field_validator("device_id")
    @classmethod
    def _topic_safe(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise ValueError("may only contain letters, digits, '_' and '-'")
        return value

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _no_wildcards(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "#+") or value.endswith("/")):
            raise ValueError("must be a non-empty topic without '#', '+' or a trailing '/'")
        return value


class PictureSettings(Section):
    """The picture as the camera makes it: controls, night mode, privacy masks. All three can be changed
    at run time (``/api/camera/settings``, the page, Home Assistant) and are then kept in
    ``picture.json`` in the state folder, which wins over this at the next start."""

    controls: dict[str, float | str] = Field(default_factory=dict, description="control name: value")
    night_mode: Literal["auto", "on", "off"] = "off"
    night_grey: bool = Field(True, description="show the picture in grey while night mode is on")
    night_below: float = Field(40.0, ge=0, le=255, description="auto: mean brightness that turns night mode on")
    night_above: float = Field(80.0, ge=0, le=255, description="auto: mean brightness that turns it off again")
    night_hold: float = Field(20.0, ge=0, le=3600, description="s the brightness must stay past a limit")
    masks: list[Mask] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _hysteresis(self) -> PictureSettings:
        if self.night_above <= self.night_below:
            raise ValueError("night_above must be above night_below (the gap keeps night mode from flapping)")
        return self


class GpioSettings(Section):
    """The push button and status LED; GPIO stays off unless a pin is set."""

    button_pin: int | None = Field(None, ge=0, le=27)
    button_pull_up: bool = True
    debounce: float = Field(0.05, ge=0, le=1)
    hold_time: float = Field(3.0, gt=0, le=60)
    hold_action: Literal["none", "snapshot", "off", "arm"] = Field(
        "snapshot", description="arm: arm or disarm (until the schedule's next change)")
    led_pin: int | None = Field(None, ge=0, le=27)
    led_active_high: bool = True
    blink_interval: float = Field(0.5, gt=0)
    motion_flash: float = Field(0.2, ge=0)
    night_pin: int | None = Field(None, ge=0, le=27, description="output on while night mode is on (IR)")
    night_active_high: bool = True

    @model_validator(mode="after")
    def _distinct_pins(self) -> GpioSettings:
        pins = [pin for pin in (self.button_pin, self.led_pin, self.night_pin) if pin is not None]
        if len(pins) != len(set(pins)):
            raise ValueError("button_pin, led_pin and night_pin must differ")
        return self


class AppConfig(Section):
    """The whole configuration."""

    camera: CameraSettings = CameraSettings()
    motion: MotionSettings = MotionSettings()
    overlay: OverlaySettings = OverlaySettings()
    stream: StreamSettings = StreamSettings()
    rtsp: RtspSettings = RtspSettings()
    onvif: OnvifSettings = OnvifSettings()
    server: ServerSettings = ServerSettings()
    retry: RetrySettings = RetrySettings()
    events: EventsSettings = EventsSettings()
    recording: RecordingSettings = RecordingSettings()
    mqtt: MqttSettings = MqttSettings()
    gpio: GpioSettings = GpioSettings()
    picture: PictureSettings = PictureSettings()
    detection: DetectionSettings = DetectionSettings()
    notify: NotifySettings = NotifySettings()
    arming: ArmingSettings = ArmingSettings()
    state_dir: Path | None = Field(None, description="default: $STATE_DIRECTORY or ~/.local/state/appliance")
    name: str = Field("Camera appliance", min_length=1, max_length=64)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _onvif_needs(self) -> AppConfig:
        """ONVIF streams over RTSP and lets clients sign their calls: a camera anyone on the network
        could use and reconfigure is not offered."""
        if not self.onvif.enabled:
            return self
        if not self.rtsp.enabled:
            raise ValueError("onvif.enabled needs rtsp.enabled: ONVIF clients stream over RTSP")
        if self.server.auth.username is None:
            raise ValueError("onvif.enabled needs the login (server.auth.username and password_file): "
                             "ONVIF is not offered to anyone on the network without one")
        if self.server.auth.password_file is None:
            raise ValueError("onvif.enabled needs server.auth.password_file, not password_hash: ONVIF "
                             "clients sign their calls with digests made from the password itself")
        return self

    def resolved_state_dir(self, environ: Mapping[str, str] | None = None) -> Path:
        """The folder for the state file and events: systemd's StateDirectory wins over the home."""
        env = os.environ if environ is None else environ
        if self.state_dir is not None:
            return self.state_dir
        if env.get("STATE_DIRECTORY"):
            return Path(env["STATE_DIRECTORY"].split(":")[0])
        base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        return base / "appliance"

    def recordings_folder(self, environ: Mapping[str, str] | None = None) -> Path:
        """Where continuous recordings and timelapses go: ``recording.folder``, else beside the events."""
        return self.recording.folder or self.resolved_state_dir(environ) / "recordings"


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: cannot set a key below {key!r}, which is not a section")
        tree = node
    tree[path[-1]] = value


def _field_annotation(path: list[str]) -> Any:
    """The type annotation of the config field at ``path``, or None when no such field exists."""
    model: Any = AppConfig
    annotation: Any = None
    for key in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or key not in model.model_fields:
            return None
        annotation = model.model_fields[key].annotation
        model = _unwrap_optional(annotation)
    return annotation


def _unwrap_optional(annotation: Any) -> Any:
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _env_value(path: list[str], raw: str) -> Any:
    """An environment value, typed by the field it sets.

    Text fields (names, paths, passwords) take the string exactly as written: no YAML, so ``#abc``
    stays ``#abc`` and ``0123`` stays ``0123``. Other fields get the raw string too and pydantic
    parses and validates it ("10" → 10, "false" → False). ``null`` or an empty value unsets a
    non-text field; lists take comma-separated items.
    """
    target = _unwrap_optional(_field_annotation(path))
    if target in (str, SecretStr, Path):
        return raw
    if raw.strip().lower() in ("", "null", "none", "~"):
        return None
    if get_origin(target) is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``APPLIANCE_CAMERA__FPS=10`` becomes ``{"camera": {"fps": "10"}}``, typed by the field it sets."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        _set_path(tree, path, _env_value(path, raw))
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


SECRET_KEYS = frozenset({"password", "password_hash", "token", "secret", "url"})
"""Keys whose values never appear in a message: a config error goes to the journal."""


def redact(value: Any, key: str | None = None) -> Any:
    """``value`` with every secret replaced by ``***``, for messages and dumps."""
    if key in SECRET_KEYS and value is not None:
        return "***"
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem: the key, its value (secrets redacted) and why it is refused."""
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        # Drop pydantic's internal markers such as "function-after[...]" from the key path.
        key = ".".join(part for part in loc if not part.startswith(("function-", "tuple[")))
        named = [part for part in loc if not part.startswith(("function-", "tuple["))]
        value = redact(item.get("input"), named[-1] if named else None)
        if item["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (value {value!r})")
        else:
            message = item["msg"]
            if any(part in SECRET_KEYS for part in named):
                message = message.split(",")[0]  # pydantic may quote the input in its message
            lines.append(f"{key or '(top level)'} = {value!r}: {message}")
    return lines


def _describe(error: ValidationError, tree: Mapping[str, Any]) -> str:
    return "invalid configuration:\n  " + "\n  ".join(describe_errors(error))


def load_config(
    path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AppConfig:
    """Build the configuration from a YAML file (``-``: standard input), the environment and flag overrides.

    Raises ConfigError with every offending key, its value and the reason.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(loaded).__name__}")
        tree = loaded
    tree = _merge(tree, env_overrides(os.environ if environ is None else environ))
    tree = _merge(tree, overrides or {})
    try:
        config = AppConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, tree)) from None
    check_files(config)
    return config


def check_files(config: AppConfig) -> None:
    """Every file the config names must be readable now, by this user: found at start-up and by
    ``--check-config`` (which the Ansible role runs as the service user), not at the first login."""
    files = {
        "mqtt.password_file": config.mqtt.password_file,
        "mqtt.tls.ca_file": config.mqtt.tls.ca_file,
        "mqtt.tls.cert_file": config.mqtt.tls.cert_file,
        "mqtt.tls.key_file": config.mqtt.tls.key_file,
        "server.auth.password_file": config.server.auth.password_file,
        "server.tls.cert_file": config.server.tls.cert_file,
        "server.tls.key_file": config.server.tls.key_file,
    }
    problems = []
    for key, path in files.items():
        if path is None:
            continue
        try:
            with open(path, "rb") as handle:
                empty = handle.read(1) == b""
        except OSError as exc:
            problems.append(f"{key} = {str(path)!r}: cannot read it: {exc.strerror or exc}")
            continue
        if empty:
            problems.append(f"{key} = {str(path)!r}: the file is empty")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
