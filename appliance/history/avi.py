"""A clip as an AVI file (Motion-JPEG), built around the stored JPEGs without decoding or re-encoding.

Why AVI and not a library: the frames are already JPEGs, and AVI's Motion-JPEG is the container every
common player opens (VLC, mpv, ffmpeg, Windows' own player) that takes them as they are. The libraries
that mux packets (PyAV and ffmpeg) would add tens of megabytes to a Pi and have no wheels for 32-bit
Raspberry Pi OS; ``cv2.VideoWriter`` re-encodes every frame. The layout here is Microsoft's AVI 1.0
RIFF (``hdrl`` with ``avih``/``strh``/``strf``, ``movi`` with one ``00dc`` chunk per frame, then the
``idx1`` index), which ffprobe reads without a warning.

Sizes are known from the clip's index before a byte is sent, so the file is streamed from the data
file with an exact ``Content-Length`` and never held in memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from fractions import Fraction
from typing import BinaryIO

from appliance.history.clip_files import ClipIndex

_AVIF_HASINDEX = 0x10
_AVIIF_KEYFRAME = 0x10


def _chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def _frame_rate(index: ClipIndex) -> Fraction:
    """The clip's average rate (frames over the time they span), so its length plays true even when the
    camera delivered fewer frames than asked."""
    entries = index.entries
    if len(entries) > 1 and entries[-1].t > entries[0].t:
        rate = (len(entries) - 1) / (entries[-1].t - entries[0].t)
    else:
        rate = index.fps
    return Fraction(rate).limit_denominator(1000)


def _headers(index: ClipIndex, movi_size: int) -> bytes:
    rate = _frame_rate(index)
    frames = len(index.entries)
    width, height = index.width, index.height
    largest = max((entry.size for entry in index.entries), default=0)
    micro_per_frame = round(1_000_000 / rate)
    avih = struct.pack("<14I", micro_per_frame, int(largest * rate), 0, _AVIF_HASINDEX, frames, 0, 1, largest,
                       width, height, 0, 0, 0, 0)
    strh = b"vidsMJPG" + struct.pack("<IHH6Ii I4h", 0, 0, 0, 0, rate.denominator, rate.numerator, 0, frames,
                                     largest, -1, 0, 0, 0, width, height)
    strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0)
    strl = _chunk(b"LIST", b"strl" + _chunk(b"strh", strh) + _chunk(b"strf", strf))
    hdrl = _chunk(b"LIST", b"hdrl" + _chunk(b"avih", avih) + strl)
    index_size = 8 + 16 * frames
    riff_size = 4 + len(hdrl) + 8 + movi_size + index_size
    return b"RIFF" + struct.pack("<I", riff_size) + b"AVI " + hdrl + b"LIST" + struct.pack("<I", movi_size) + b"movi"


def _movi_size(index: ClipIndex) -> int:
    return 4 + sum(8 + entry.size + entry.size % 2 for entry in index.entries)


def avi_size(index: ClipIndex) -> int:
    """The whole file's length in bytes."""
    return len(_headers(index, _movi_size(index))) + _movi_size(index) - 4 + 8 + 16 * len(index.entries)


def avi_stream(index: ClipIndex, data: BinaryIO) -> Iterator[bytes]:
    """The AVI file in pieces: headers, one chunk per frame (read from the clip's open data file), the
    index. The caller closes ``data``."""
    yield _headers(index, _movi_size(index))
    offsets = []
    at = 4  # idx1 offsets count from the "movi" fourcc
    for entry in index.entries:
        data.seek(entry.offset)
        jpeg = data.read(entry.size)
        offsets.append((at, len(jpeg)))
        yield b"00dc" + struct.pack("<I", len(jpeg)) + jpeg + (b"\0" if len(jpeg) % 2 else b"")
        at += 8 + len(jpeg) + len(jpeg) % 2
    yield b"idx1" + struct.pack("<I", 16 * len(offsets)) + b"".join(
        b"00dc" + struct.pack("<III", _AVIIF_KEYFRAME, offset, size) for offset, size in offsets)
