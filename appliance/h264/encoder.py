"""The H.264 encoder: chosen once at start-up, opened afresh whenever the feed starts from nothing.

PyAV (FFmpeg) encodes: its wheels carry libx264 and ``h264_v4l2m2m``, the V4L2 memory-to-memory
encoder of the Pi 4 and Zero 2 W (``/dev/video11``, driver ``bcm2835-codec``). The Pi 5 has no H.264
hardware, so it and x86 machines use libx264, tuned for live video: ``ultrafast``/``zerolatency``,
no B-frames (a recorder's decoder never waits for a later frame), a keyframe at a fixed interval
and on request (a new client starts on the next frame, not the next interval). The server's
``h264parse`` repeats the parameter sets before every keyframe, so a client can start at any.
"""

from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.camera_backends.yuv import I420
from appliance.config import RtspSettings

log = logging.getLogger(__name__)

CLOCK = 90_000  # RTP's clock for video: presentation times are counted in it
V4L2_ENCODER_NAME = Path("/sys/class/video4linux/video11/name")
# FFmpeg's generic ``profile`` option is a number (AV_PROFILE_H264_*); only libx264 has a private one
# that takes a name. h264_v4l2m2m maps the number to V4L2's profile control, and "main" as text stops
# it before it even looks for the device. Baseline is the constrained kind: no B-frames, no FMO.
PROFILE_NUMBERS = {"baseline": 66 | 512, "main": 77, "high": 100}


class EncoderUnavailable(Exception):
    """No H.264 encoder can run here; the message says why (PyAV missing, the codec missing)."""


class H264Error(Exception):
    """The encoder failed on a frame."""


def _pyav() -> Any:
    try:
        import av
    except ImportError as exc:
        raise EncoderUnavailable(f"PyAV is not installed ({exc}); install the 'rtsp' extra "
                                 "(pip install -r requirements.txt)") from None
    return av


def hardware_encoder_present(name_file: Path = V4L2_ENCODER_NAME) -> bool:
    """Whether the Pi's V4L2 H.264 encoder is there (Pi 4, Zero 2 W; not the Pi 5)."""
    try:
        return name_file.read_text().strip().startswith("bcm2835-codec")
    except OSError:
        return False


def choose_codec(setting: str, name_file: Path = V4L2_ENCODER_NAME) -> str:
    """The FFmpeg codec for ``rtsp.encoder``; raises ``EncoderUnavailable`` when it cannot run here."""
    av = _pyav()
    available = av.codecs_available
    if setting == "auto":
        if hardware_encoder_present(name_file) and "h264_v4l2m2m" in available:
            return "h264_v4l2m2m"
        setting = "libx264"
    if setting not in available:
        raise EncoderUnavailable(f"this PyAV has no {setting} encoder")
    if setting == "h264_v4l2m2m" and not hardware_encoder_present(name_file):
        raise EncoderUnavailable(f"no V4L2 H.264 encoder here ({name_file} does not name bcm2835-codec)")
    return setting


def _open_saying_why(av: Any, context: Any) -> str | None:
    """Open ``context``; None when it opened, else why not, with what FFmpeg logged on this thread
    (the exception alone says "Invalid argument", the log "Could not find a valid device"). PyAV
    passes FFmpeg's log on only while a level is set, so one is set for the open alone."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR if level is None else level)
    try:
        with av.logging.Capture() as said:
            try:
                context.open()
            except Exception as exc:  # FFmpeg's errors are several classes; each says what it could not do
                lines = "; ".join(dict.fromkeys(line.strip() for _, _, line in said if line.strip()))
                return f"{exc} (FFmpeg: {lines})" if lines else str(exc)
    finally:
        av.logging.set_level(level)
    return None


ONE_THREAD_PIXELS = 1280 * 720 * 15
"""Pixels a second libx264 encodes on one thread: up to 720p15 one thread keeps up with room to spare
(5 ms a frame on the development machine), and each extra thread holds frames of its own (4 MiB at
720p); above it, as many threads as x264 picks for the cores."""


def encoder_options(codec: str, settings: RtspSettings, size: tuple[int, int] = (0, 0)) -> dict[str, str]:
    """The FFmpeg options ``codec`` is opened with at ``size``: each codec gets only options it understands."""
    if codec != "libx264":
        return {"profile": str(PROFILE_NUMBERS[settings.profile])}
    kbit = settings.bitrate // 1000
    # The VBV caps the rate over about a second, so a burst of motion does not flood Wi-Fi.
    return {"profile": settings.profile, "preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1",
            "threads": "1" if size[0] * size[1] * settings.fps <= ONE_THREAD_PIXELS else "0",
            "x264-params": f"vbv-maxrate={kbit * 6 // 5}:vbv-bufsize={kbit}"}


@dataclass(frozen=True)
class Packet:
    """One access unit in Annex B form, the monotonic time its frame was captured (the server and
    the recordings stamp it with that), the picture's size (a file starts anew when it changes) and
    the privacy masks it was taken under (an event's pre-roll keeps none from before a change)."""

    data: bytes
    keyframe: bool
    captured_at: float = 0.0
    size: tuple[int, int] = (0, 0)
    masks: tuple[Any, ...] = ()


class H264Encoder:
    """One encoder context: frames in (BGR or I420), access units out. Used by one thread only."""

    def __init__(self, codec: str, size: tuple[int, int], settings: RtspSettings) -> None:
        av = _pyav()
        self.codec = codec
        self.size = size
        context = av.CodecContext.create(codec, "w")
        context.width, context.height = size
        context.pix_fmt = "yuv420p"
        context.time_base = fractions.Fraction(1, CLOCK)
        context.framerate = fractions.Fraction(settings.fps).limit_denominator(1001)
        context.gop_size = max(1, round(settings.fps * settings.keyframe_interval))
        context.max_b_frames = 0
        context.bit_rate = settings.bitrate
        context.options = encoder_options(codec, settings, size)
        failure = _open_saying_why(av, context)
        if failure is not None:
            raise EncoderUnavailable(f"{codec} does not open at {size[0]}x{size[1]}: {failure}")
        self._context = context
        self._av = av
        self._last_pts = -1
        self._picture_type_i = av.video.frame.PictureType.I

    def encode(self, image: np.ndarray | I420, pts: int, keyframe: bool = False,
               captured_at: float = 0.0) -> list[Packet]:
        """Encode one frame of ``size`` (BGR, or I420 planes taken as they are) shown at ``pts``;
        ``keyframe`` forces an IDR frame."""
        pts = max(pts, self._last_pts + 1)  # strictly increasing, whatever the clock did
        self._last_pts = pts
        # Limited range either way, as H.264 is by convention (and as players assume when not told).
        yuv = image.video() if isinstance(image, I420) else cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        frame = self._av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        if keyframe:
            frame.pict_type = self._picture_type_i
        try:
            packets = self._context.encode(frame)
        except Exception as exc:
            raise H264Error(f"{self.codec} failed: {exc}") from exc
        return [Packet(bytes(packet), packet.is_keyframe, captured_at, self.size) for packet in packets]

    def close(self) -> None:
        """Let the context go (the hardware encoder's buffers with it); frames still inside are dropped."""
        self._context = None
