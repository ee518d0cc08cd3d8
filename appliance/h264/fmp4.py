"""Fragmented MP4 for a live stream: one init segment, then one fragment per access unit, at once.

A browser's Media Source Extensions take H.264 only inside fragmented MP4 (ISO/IEC 14496-12 boxes,
the sample entry of 14496-15): an *init segment* (``ftyp`` + ``moov``, the parameter sets in
``avcC``) and then *media segments* (``moof`` + ``mdat``). FFmpeg's MP4 muxer, which writes the
recordings (``mp4``), does not fit a live view: it holds each fragment back until the next frame
arrives (to know the sample's duration: a frame period of latency), and it keeps an index entry per
fragment for the file's end, which a never-ending stream of per-frame fragments grows without bound
(measured: 40 bytes a fragment, 2 MiB an hour at 15 frames/s). go2rtc writes its own boxes for the
same reasons. Here each access unit becomes its fragment the moment it is encoded, stamped with its
capture time and the nominal frame period, and nothing is kept between fragments.

Everything here is a pure function of its arguments: the boxes are built once per frame and the same
bytes go to every viewer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TIMESCALE = 90_000  # ticks a second on the media timeline (as RTP's clock and the encoder's pts)
TRACK = 1
_NAL_SPS, _NAL_PPS = 7, 8
_HIGH_PROFILES = {100, 110, 122, 144}
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_KEY_FLAGS = 0x02000000  # sample_depends_on = 2: decodes on its own
_DELTA_FLAGS = 0x01010000  # depends on others, and is not a sync sample


def box(kind: bytes, *payload: bytes) -> bytes:
    """One box: its 32-bit size, its four-letter type, its payload."""
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def nal_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit, start codes removed. Emulation prevention keeps
    ``00 00 01`` out of every NAL unit, and none ends in a zero byte (its stop bit), so the zeros
    left before a split are a four-byte start code's or trailing padding."""
    return [nal.rstrip(b"\0") for nal in access_unit.split(b"\x00\x00\x01")[1:] if nal.rstrip(b"\0")]


def parameter_sets(access_unit: bytes) -> tuple[bytes, bytes] | None:
    """The first SPS and PPS an access unit carries (the encoders here repeat them at every
    keyframe), or None."""
    sps = pps = None
    for nal in nal_units(access_unit):
        kind = nal[0] & 0x1F
        if kind == _NAL_SPS and sps is None and len(nal) >= 4:
            sps = nal
        elif kind == _NAL_PPS and pps is None:
            pps = nal
    return (sps, pps) if sps is not None and pps is not None else None


def codec_string(sps: bytes) -> str:
    """RFC 6381's name of the stream, as ``MediaSource.isTypeSupported`` takes it: ``avc1.4D401F``."""
    return f"avc1.{sps[1]:02X}{sps[2]:02X}{sps[3]:02X}"


@dataclass(frozen=True)
class InitSegment:
    """What a player needs before the first fragment; a new one comes with new parameter sets."""

    data: bytes
    codec: str
    size: tuple[int, int]
    parameter_sets: tuple[bytes, bytes]


def _avc_config(sps: bytes, pps: bytes) -> bytes:
    """``avcC``: the decoder's configuration, four-byte NAL lengths. The high profiles add chroma
    format and bit depths: always 4:2:0 and 8 bits here (the encoders are opened ``yuv420p``)."""
    config = bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]) + struct.pack(">H", len(sps)) + sps
    config += bytes([1]) + struct.pack(">H", len(pps)) + pps
    if sps[1] in _HIGH_PROFILES:
        config += bytes([0xFC | 1, 0xF8, 0xF8, 0])
    return box(b"avcC", config)


def init_segment(sps: bytes, pps: bytes, size: tuple[int, int]) -> InitSegment:
    """``ftyp`` + ``moov`` for one H.264 track of ``size``, with no samples (they come in fragments)."""
    width, height = size
    ftyp = box(b"ftyp", b"iso5", struct.pack(">I", 512), b"iso5iso6avc1mp41")
    mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, 0), struct.pack(">IH", 0x10000, 0x100),
                    bytes(10), _MATRIX, bytes(24), struct.pack(">I", TRACK + 1))
    tkhd = full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, TRACK, 0, 0), bytes(8),
                    struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX, struct.pack(">II", width << 16, height << 16))
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, TIMESCALE, 0, 0x55C4, 0))  # language "und"
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, b"vide"), bytes(12), b"VideoHandler\0")
    avc1 = box(b"avc1", bytes(6), struct.pack(">H", 1), bytes(16), struct.pack(">HH", width, height),
               struct.pack(">III", 0x480000, 0x480000, 0), struct.pack(">H", 1), bytes(32),
               struct.pack(">Hh", 0x18, -1), _avc_config(sps, pps))
    stbl = box(b"stbl", full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
               full_box(b"stts", 0, 0, bytes(4)), full_box(b"stsc", 0, 0, bytes(4)),
               full_box(b"stsz", 0, 0, bytes(8)), full_box(b"stco", 0, 0, bytes(4)))
    minf = box(b"minf", full_box(b"vmhd", 0, 1, bytes(8)),
               box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1))), stbl)
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", TRACK, 1, 0, 0, 0)))
    return InitSegment(ftyp + box(b"moov", mvhd, trak, mvex), codec_string(sps), size, (sps, pps))


def fragment(sequence: int, decode_time: int, duration: int, keyframe: bool, access_unit: bytes) -> bytes:
    """``moof`` + ``mdat`` holding one access unit (its NAL units length-prefixed, as ``avcC``
    says), decoded at ``decode_time`` and shown for ``duration`` ticks of ``TIMESCALE``."""
    payload = b"".join(struct.pack(">I", len(nal)) + nal for nal in nal_units(access_unit))
    flags = _KEY_FLAGS if keyframe else _DELTA_FLAGS

    def moof(data_offset: int) -> bytes:
        trun = full_box(b"trun", 0, 0x000701, struct.pack(">IiIII", 1, data_offset, duration, len(payload), flags))
        traf = box(b"traf", full_box(b"tfhd", 0, 0x020000, struct.pack(">I", TRACK)),  # base: this moof
                   full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time)), trun)
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), traf)

    head = moof(0)
    head = moof(len(head) + 8)  # the sample starts after this moof and the mdat's own header
    return head + struct.pack(">I4s", 8 + len(payload), b"mdat") + payload
