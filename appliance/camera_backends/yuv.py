"""Pictures kept as the camera gives them: planar YUV 4:2:0 (I420), never turned into BGR on the way.

A Pi camera delivers YUV 4:2:0, and everything the capture thread makes of a frame wants YUV too: a
JPEG *is* Y, Cb and Cr planes with the colour at half resolution (libjpeg-turbo takes them as they
are), H.264 encoders take I420, and motion wants only the brightness. Converting every frame to BGR,
as OpenCV's world expects, costs a full-size pass and three bytes a pixel; JPEG encoding from BGR then
converts it back. picamera2's own MJPEG path hands the planes straight to simplejpeg; so does this.

``I420`` holds one picture in one contiguous array of ``height * 3 / 2`` rows of ``width`` bytes: the Y
plane, then U (Cb), then V (Cr), each a quarter of Y. The values are JPEG's (JFIF): full range 0-255,
BT.601, so a JPEG is encoded from the planes with no arithmetic at all. A camera configured for
limited ("video") range is brought to full range as its buffer is copied (a scale and offset in the
copy that has to happen anyway); H.264, which by convention is limited range, gets the reverse as its
encoder's input is made. The colour work (masks, night grey, the overlay's boxes and text) is done
on the planes themselves, or, for the text, on the few pixels it covers.

The BGR path stays for cameras that give BGR (OpenCV's capture, the demo camera); the two paths make
the same pictures (``tests/test_yuv.py``), and ``bench/yuv.py`` measures what the planes save.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

Scale = tuple[float, float]
"""A linear map of 8-bit values, ``value * a + b`` (rounded, clipped to 0-255)."""

LIMITED_TO_FULL_Y: Scale = (255 / 219, -16 * 255 / 219)
LIMITED_TO_FULL_C: Scale = (255 / 224, 128 - 128 * 255 / 224)
FULL_TO_LIMITED_Y: Scale = (219 / 255, 16.0)
FULL_TO_LIMITED_C: Scale = (224 / 255, 128 - 128 * 224 / 255)


def _scaled(source: np.ndarray, scale: Scale, target: np.ndarray) -> None:
    """``target`` = ``source`` mapped by ``scale`` (OpenCV's saturating arithmetic; same shapes)."""
    cv2.addWeighted(source, scale[0], source, 0.0, scale[1], dst=target)


@dataclass(frozen=True)
class I420:
    """One picture as planar YUV 4:2:0 in full range (see the module docstring); even width and height."""

    data: np.ndarray  # (height * 3 // 2, width) uint8, C-contiguous

    @staticmethod
    def blank(width: int, height: int) -> I420:
        return I420(np.empty((height * 3 // 2, width), np.uint8))

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0]) * 2 // 3

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def y(self) -> np.ndarray:
        return self.data[:self.height]

    @property
    def u(self) -> np.ndarray:
        width, height = self.size
        return self.data.reshape(-1)[width * height:width * height * 5 // 4].reshape(height // 2, width // 2)

    @property
    def v(self) -> np.ndarray:
        width, height = self.size
        return self.data.reshape(-1)[width * height * 5 // 4:].reshape(height // 2, width // 2)

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.y, self.u, self.v

    def copy(self) -> I420:
        return I420(self.data.copy())

    def bgr(self) -> np.ndarray:
        """The picture as an OpenCV BGR image (for what only takes BGR: Motion-JPEG clips, OpenCV's encoder)."""
        y, u, v = self.planes()
        full_u = cv2.resize(u, self.size, interpolation=cv2.INTER_LINEAR)
        full_v = cv2.resize(v, self.size, interpolation=cv2.INTER_LINEAR)
        return cv2.cvtColor(cv2.merge((y, full_v, full_u)), cv2.COLOR_YCrCb2BGR)

    def video(self) -> np.ndarray:
        """The picture in limited range, as H.264 encoders take ``yuv420p``: a new array."""
        out = np.empty_like(self.data)
        _scaled(self.y, FULL_TO_LIMITED_Y, out[:self.height])
        _scaled(self.data[self.height:], FULL_TO_LIMITED_C, out[self.height:])  # U and V: whole rows of bytes
        return out

    def resized(self, size: tuple[int, int]) -> I420:
        """A new picture of ``size`` (even numbers), each plane scaled by area."""
        out = I420.blank(*size)
        for source, target in zip(self.planes(), out.planes(), strict=True):
            cv2.resize(source, (target.shape[1], target.shape[0]), dst=target, interpolation=cv2.INTER_AREA)
        return out


def from_bgr(image: np.ndarray) -> I420:
    """A BGR image (even width and height) as I420, full range: for tests and benches."""
    height, width = image.shape[:2]
    ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    out = I420.blank(width, height)
    out.y[:] = ycrcb[:, :, 0]
    cv2.resize(ycrcb[:, :, 2], (width // 2, height // 2), dst=out.u, interpolation=cv2.INTER_AREA)
    cv2.resize(ycrcb[:, :, 1], (width // 2, height // 2), dst=out.v, interpolation=cv2.INTER_AREA)
    return out


YUV420_FORMATS = ("YUV420", "YVU420", "NV12", "NV21")


def from_buffer(buffer: np.ndarray, fmt: str, size: tuple[int, int], stride: int, full_range: bool,
                into: I420 | None = None) -> I420:
    """Copy a camera buffer of 4:2:0 ``fmt`` (rows padded to ``stride`` bytes) into a full-range I420:
    ``into`` when it is of ``size`` (one picture reused frame after frame), else a new one.

    The planar formats have chroma rows of ``stride / 2``; the semi-planar (NV) ones one interleaved
    chroma row of ``stride`` per two image rows. ``full_range`` False: the camera's values are
    limited range, brought to full range in the copy (one pass either way).
    """
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"a 4:2:0 picture needs an even width and height, not {width}x{height}")
    if buffer.size < height * 3 // 2 * stride:
        raise ValueError(f"a {fmt} frame of {width}x{height} (stride {stride}) needs {height * 3 // 2 * stride} "
                         f"bytes, the buffer has {buffer.size}")
    out = into if into is not None and into.size == (width, height) else I420.blank(width, height)
    y_scale, c_scale = (None, None) if full_range else (LIMITED_TO_FULL_Y, LIMITED_TO_FULL_C)
    luma = buffer[:height * stride].reshape(height, stride)[:, :width]
    _copy(luma, out.y, y_scale)
    chroma = buffer[height * stride:height * stride * 3 // 2]
    if fmt in ("NV12", "NV21"):
        pairs = chroma.reshape(height // 2, stride)[:, :width].reshape(height // 2, width // 2, 2)
        first, second = (out.u, out.v) if fmt == "NV12" else (out.v, out.u)
        cv2.extractChannel(pairs, 0, dst=first)
        cv2.extractChannel(pairs, 1, dst=second)
        if c_scale is not None:
            for plane in (first, second):
                _scaled(plane, c_scale, plane)
    elif fmt in ("YUV420", "YVU420"):
        quarter = height // 2 * stride // 2
        one = chroma[:quarter].reshape(height // 2, stride // 2)[:, :width // 2]
        two = chroma[quarter:quarter * 2].reshape(height // 2, stride // 2)[:, :width // 2]
        u, v = (one, two) if fmt == "YUV420" else (two, one)
        _copy(u, out.u, c_scale)
        _copy(v, out.v, c_scale)
    else:
        raise ValueError(f"{fmt} is not a YUV 4:2:0 format ({', '.join(YUV420_FORMATS)})")
    return out


def _copy(source: np.ndarray, target: np.ndarray, scale: Scale | None) -> None:
    if scale is None:
        np.copyto(target, source)
    else:
        _scaled(source, scale, target)


def oriented(picture: I420, rotation: int, hflip: bool, vflip: bool) -> I420:
    """``picture`` flipped, then turned ``rotation`` degrees clockwise, plane by plane (a new picture)."""
    width, height = picture.size
    out = I420.blank(*((height, width) if rotation in (90, 270) else (width, height)))
    turn = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}.get(rotation)
    for source, target in zip(picture.planes(), out.planes(), strict=True):
        plane = source
        if hflip or vflip:
            plane = cv2.flip(plane, -1 if hflip and vflip else 1 if hflip else 0)
        if turn is None:
            np.copyto(target, plane)
        else:
            cv2.rotate(plane, turn, dst=target)
    return out


@functools.lru_cache(maxsize=16)
def ycbcr(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """A BGR colour as JPEG's full-range Y, Cb, Cr (the overlay's few colours, worked out once each)."""
    y, cr, cb = cv2.cvtColor(np.array([[bgr]], np.uint8), cv2.COLOR_BGR2YCrCb)[0, 0]
    return int(y), int(cb), int(cr)


def fill_polygons(picture: I420, polygons: Sequence[np.ndarray], bgr: tuple[int, int, int]) -> None:
    """Fill ``polygons`` (pixel points of the full picture) with ``bgr``, in place, on all three planes.

    The chroma planes get the polygons at half size through OpenCV's sub-pixel ``shift`` (the same
    points read with one fractional bit), so a half pixel is not rounded away.
    """
    y, cb, cr = ycbcr(bgr)
    cv2.fillPoly(picture.y, list(polygons), y)
    for plane, value in ((picture.u, cb), (picture.v, cr)):  # the same points, one fractional bit: halved
        cv2.fillPoly(plane, list(polygons), value, lineType=cv2.LINE_8, shift=1)


def grey(picture: I420) -> None:
    """Take the colour out, in place (the chroma planes at their neutral value)."""
    picture.data.reshape(-1)[picture.width * picture.height:] = 128


def encode_jpeg(picture: I420, quality: int) -> bytes:
    """The picture as a JPEG, from its planes (simplejpeg, libjpeg-turbo's raw-data interface)."""
    import simplejpeg

    y, u, v = picture.planes()
    return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)


def size_of(image: np.ndarray | I420) -> tuple[int, int]:
    """(width, height) of a BGR image or an I420 picture."""
    return image.size if isinstance(image, I420) else (int(image.shape[1]), int(image.shape[0]))


def scaled_copy(image: np.ndarray | I420, size: tuple[int, int]) -> np.ndarray | I420:
    """A new picture of ``size``, scaled by area (or copied when it is that size already). An I420
    picture's size is even (4:2:0): an odd one asked for is rounded down."""
    if isinstance(image, I420):
        even = (size[0] // 2 * 2, size[1] // 2 * 2)
        return image.copy() if image.size == even else image.resized(even)
    if size_of(image) == tuple(size):
        return image.copy()
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)


def bgr_of(image: np.ndarray | I420) -> np.ndarray:
    """A BGR image of the picture (the image itself when it is BGR already)."""
    return image.bgr() if isinstance(image, I420) else image
