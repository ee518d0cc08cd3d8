"""JPEG encoders: the same BGR frame in, a JPEG out, by whichever library is there and fastest.

Both candidates are libjpeg-turbo underneath: OpenCV's ``cv2.imencode`` (always there) and
simplejpeg (the encoder picamera2 itself uses; ``python3-simplejpeg`` comes with picamera2 on
Raspberry Pi OS, the ``opencv`` extra installs it from PyPI). Which is faster depends on the build
and the machine: ``bench/encoders.py`` on the x86_64 development machine found OpenCV about 6 %
faster from BGR. So ``auto`` does not guess: it times each available encoder once, at start-up, on a
frame of the configured size, and keeps the fastest. That choice is for BGR frames (OpenCV's
cameras, the demo camera); the Pi camera's I420 pictures go to simplejpeg's planar encoder
(``planes_encoder``), which takes them with no colour conversion at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np

from appliance.camera_backends.yuv import I420, encode_jpeg

log = logging.getLogger(__name__)

EncoderName = Literal["auto", "opencv", "simplejpeg"]


class EncodeError(Exception):
    """The library could not encode the frame."""


def opencv_encoder(quality: int) -> Callable[[np.ndarray], bytes]:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]

    def encode(image: np.ndarray) -> bytes:
        ok, buffer = cv2.imencode(".jpg", image, params)
        if not ok:
            raise EncodeError("cv2.imencode failed")
        return buffer.tobytes()

    return encode


def simplejpeg_encoder(quality: int) -> Callable[[np.ndarray], bytes]:
    import simplejpeg  # imported here: optional, and only when chosen

    def encode(image: np.ndarray) -> bytes:
        try:
            return simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality, colorspace="BGR",
                                          colorsubsampling="420")
        except (ValueError, RuntimeError) as exc:
            raise EncodeError(f"simplejpeg failed: {exc}") from exc

    return encode


def planes_encoder(name: EncoderName, quality: int,
                   bgr_encoder: Callable[[np.ndarray], bytes]) -> Callable[[I420], bytes]:
    """How an ``I420`` picture becomes a JPEG: from its planes by simplejpeg (no colour conversion at
    all), unless OpenCV's encoder was asked for or simplejpeg is missing: then made BGR for ``bgr_encoder``."""
    if name != "opencv":
        try:
            import simplejpeg  # noqa: F401  (only whether it is there)
        except ImportError:
            log.info("simplejpeg is not installed: the camera's YUV frames are made BGR for OpenCV's JPEG encoder")
        else:
            def encode(picture: I420) -> bytes:
                try:
                    return encode_jpeg(picture, quality)
                except (ValueError, RuntimeError) as exc:
                    raise EncodeError(f"simplejpeg failed: {exc}") from exc

            return encode
    return lambda picture: bgr_encoder(picture.bgr())


ENCODERS: dict[str, Callable[[int], Callable[[np.ndarray], bytes]]] = {
    "simplejpeg": simplejpeg_encoder,
    "opencv": opencv_encoder,
}


def sample_frame(size: tuple[int, int]) -> np.ndarray:
    """A frame with a camera's mix of smooth areas and detail, to time encoders on."""
    width, height = size
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    frame = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    frame[::8] = rng.integers(0, 256, frame[::8].shape, dtype=np.uint8)  # some fine detail
    return frame


def _time_per_frame(encode: Callable[[np.ndarray], bytes], frame: np.ndarray, repeats: int) -> float:
    encode(frame)  # warm up
    started = time.perf_counter()
    for _ in range(repeats):
        encode(frame)
    return (time.perf_counter() - started) / repeats


def choose_encoder(name: EncoderName, quality: int, size: tuple[int, int],
                   repeats: int = 8) -> tuple[str, Callable[[np.ndarray], bytes]]:
    """The encoder ``name`` asks for; ``auto``: of those installed, the fastest at ``size``, timed now."""
    if name != "auto":
        try:
            return name, ENCODERS[name](quality)
        except ImportError as exc:
            raise EncodeError(f"JPEG encoder {name} is not installed: {exc}") from exc
    available = {}
    for candidate, make in ENCODERS.items():
        try:
            available[candidate] = make(quality)
        except ImportError:
            log.info("JPEG encoder %s is not installed", candidate)
    frame = sample_frame(size)
    timings = {candidate: _time_per_frame(encode, frame, repeats) for candidate, encode in available.items()}
    fastest = min(timings, key=timings.__getitem__)
    log.info("JPEG encoder: %s (%s at %dx%d)", fastest,
             ", ".join(f"{c} {1000 * t:.2f} ms" for c, t in sorted(timings.items(), key=lambda i: i[1])), *size)
    return fastest, available[fastest]
