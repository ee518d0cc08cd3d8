"""The one H.264 encode, on the capture side: every consumer of H.264 shares it.

``encoder`` chooses and drives the encoder (PyAV: the Pi 4 / Zero 2 W hardware encoder or libx264),
opening each codec only with the options it understands; ``feed`` owns the ``h264-encoder`` thread,
which the capture thread feeds through ``VideoSink`` only while a consumer wants frames, and hands
each encoded frame to every subscription (the RTSP server, the page's live view, event clips,
continuous recording); ``mp4`` writes access units into fragmented MP4 files without re-encoding
them, and ``fmp4`` makes the per-frame fragments a browser's Media Source Extensions play live.
``build`` makes the feed when a consumer of H.264 is configured, or says why it cannot run here.
"""

from __future__ import annotations

import logging

from appliance.config import AppConfig
from appliance.h264.encoder import EncoderUnavailable, H264Encoder, choose_codec
from appliance.h264.feed import H264Feed, encode_size

log = logging.getLogger(__name__)


def consumers(config: AppConfig) -> list[str]:
    """What the configuration asks of H.264: the RTSP stream, the page's live view, MP4 event clips,
    recordings."""
    clip = config.events.clip
    wanted = {"RTSP": config.rtsp.enabled, "the page's H.264 live view": config.stream.h264,
              "MP4 event clips": clip.enabled and clip.format != "mjpeg",
              "continuous recording": config.recording.continuous.enabled,
              "timelapse": config.recording.timelapse.enabled}
    return [name for name, on in wanted.items() if on]


def build(config: AppConfig) -> tuple[H264Feed | None, str | None]:
    """The H.264 feed when a consumer of it is configured (``consumers``), else None; None and why
    not when PyAV or every encoder is missing here. With ``rtsp.encoder: auto`` on a board whose
    hardware encoder will not open, libx264 encodes and ``H264Feed.fallback`` says why. The
    encoder's settings (size, rate, bitrate, profile, keyframes) are ``rtsp.*``, for every consumer."""
    settings = config.rtsp
    if not consumers(config):
        return None, None
    # Unless a size is set, H.264 has the picture's own: the camera's, turned as ``rotation`` turns it.
    default_size = config.stream.size
    width, height = config.camera.size
    turned = (height, width) if config.camera.rotation in (90, 270) else (width, height)
    try:
        codec = choose_codec(settings.encoder)
    except EncoderUnavailable as exc:
        return None, f"no H.264 encoder: {exc}"
    size = encode_size(settings, default_size, turned)
    fallback = None
    try:  # opens at the size it will encode, with the options it will use, or says why not
        H264Encoder(codec, size, settings).close()
    except EncoderUnavailable as exc:
        if settings.encoder != "auto" or codec == "libx264":
            return None, f"no H.264 encoder: {exc}"
        fallback = f"the hardware encoder did not open, so libx264 encodes: {exc}"
        log.warning("H.264: %s", fallback)
        try:
            codec = choose_codec("libx264")
            H264Encoder(codec, size, settings).close()
        except EncoderUnavailable as again:
            return None, f"no H.264 encoder: {again}"
    log.info("H.264 encoder: %s", codec)
    return H264Feed(codec, settings, default_size, config.overlay, fallback=fallback), None
