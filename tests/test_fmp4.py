"""Live fragmented MP4 (``h264/fmp4``) and one viewer's outbox (``mse/outbox``): pure, no server.

The boxes are checked by reading them back with FFmpeg (PyAV's demuxer and decoder), the reader the
recordings are checked with too: frames, times, sizes, pictures, keyframes.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from appliance.config import RtspSettings
from appliance.h264 import fmp4
from appliance.h264.encoder import CLOCK, H264Encoder, Packet
from appliance.mse.outbox import Outbox


def encoded(frames: int, size: tuple[int, int] = (320, 240), profile: str = "main",
            keyframes: tuple[int, ...] = (0,)) -> list[Packet]:
    """libx264's access units of a white bar that moves right, one frame per 1/15 s."""
    width, height = size
    encoder = H264Encoder("libx264", size, RtspSettings(profile=profile, keyframe_interval=10))
    packets = []
    for n in range(frames):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, (n * 7) % (width - 20):(n * 7) % (width - 20) + 20] = 255
        packets += encoder.encode(image, n * CLOCK // 15, n in keyframes, captured_at=100 + n / 15)
    return packets


def stream_of(packets: list[Packet], start: int = 0) -> tuple[bytes, fmp4.InitSegment]:
    sets = fmp4.parameter_sets(packets[0].data)
    assert sets is not None
    init = fmp4.init_segment(*sets, packets[0].size)
    body = b"".join(fmp4.fragment(n + 1, start + n * 6000, 6000, packet.keyframe, packet.data)
                    for n, packet in enumerate(packets))
    return init.data + body, init


def top_boxes(data: bytes) -> list[str]:
    kinds, at = [], 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        kinds.append(kind.decode())
        at += size
    assert at == len(data)
    return kinds


def test_an_init_segment_and_a_fragment_per_frame_play_back_as_encoded() -> None:
    import av

    packets = encoded(30)
    data, init = stream_of(packets, start=90_000)
    assert top_boxes(data) == ["ftyp", "moov"] + ["moof", "mdat"] * 30
    assert init.codec.startswith("avc1.") and init.size == (320, 240)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
        demuxed = [packet for packet in container.demux(stream) if packet.size]
        assert [p.pts for p in demuxed] == [90_000 + n * 6000 for n in range(30)]
        assert [bool(p.is_keyframe) for p in demuxed] == [True] + [False] * 29
        pictures = [frame.to_ndarray(format="gray") for packet in demuxed for frame in packet.decode()]
    assert len(pictures) == 30
    for n, picture in enumerate(pictures):  # the bar is where it was drawn, frame after frame
        bar = (n * 7) % 300
        assert picture[120, bar + 10] > 200 and picture[120, (bar + 160) % 320] < 60


@pytest.mark.parametrize(("profile_idc", "extension"), [(66, b""), (77, b""), (100, bytes([0xFD, 0xF8, 0xF8, 0]))])
def test_avc_config_names_the_profile_and_adds_chroma_and_depth_for_high_profiles(profile_idc: int,
                                                                                  extension: bytes) -> None:
    sps, pps = bytes([0x67, profile_idc, 0xC0, 0x1F, 0xAA]), bytes([0x68, 0xCE, 0x3C, 0x80])
    init = fmp4.init_segment(sps, pps, (1280, 720))
    assert init.codec == f"avc1.{profile_idc:02X}C01F"
    at = init.data.index(b"avcC") + 4
    size = struct.unpack(">I", init.data[at - 8:at - 4])[0] - 8
    config = init.data[at:at + size]
    assert config[:6] == bytes([1, profile_idc, 0xC0, 0x1F, 0xFF, 0xE1])
    assert config[6:8 + len(sps)] == struct.pack(">H", len(sps)) + sps
    assert config[8 + len(sps):] == bytes([1]) + struct.pack(">H", len(pps)) + pps + extension


def test_nal_units_split_on_three_and_four_byte_start_codes_and_parameter_sets_are_found() -> None:
    data = b"\x00\x00\x00\x01\x09\xf0" + b"\x00\x00\x01\x67\x42\xc0\x1f\x01" + b"\x00\x00\x00\x01\x68\xce\x00\x03" \
        + b"\x00\x00\x01\x65\x88\x80\x00\x00"
    assert fmp4.nal_units(data) == [b"\x09\xf0", b"\x67\x42\xc0\x1f\x01", b"\x68\xce\x00\x03", b"\x65\x88\x80"]
    assert fmp4.parameter_sets(data) == (b"\x67\x42\xc0\x1f\x01", b"\x68\xce\x00\x03")
    assert fmp4.parameter_sets(b"\x00\x00\x01\x41\x9a\x00\x00\x01\x68\xce") is None  # no SPS


def test_a_stream_joined_at_a_later_keyframe_plays_from_there_with_its_own_times() -> None:
    """What a viewer who joins a running stream gets: the init segment, then fragments from a keyframe."""
    import av

    packets = encoded(20, keyframes=(0, 12))
    sets = fmp4.parameter_sets(packets[12].data)
    assert sets is not None, "the encoder repeats its parameter sets at every keyframe"
    init = fmp4.init_segment(*sets, packets[12].size)
    data = init.data + b"".join(fmp4.fragment(n, n * 6000, 6000, packets[n].keyframe, packets[n].data)
                                for n in range(12, 20))
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    assert [frame.pts for frame in frames] == [n * 6000 for n in range(12, 20)]


# --- one viewer's outbox --------------------------------------------------------------------------


def drain(box: Outbox, most: int | None = None) -> bytes:
    """What the socket takes: everything, or at most ``most`` bytes."""
    out = b""
    while (pending := box.pending()) is not None and (most is None or len(out) < most):
        take = bytes(pending[:most - len(out)] if most is not None else pending)
        box.sent(len(take))
        out += take
    return out


def test_a_viewer_starts_at_a_keyframe_after_the_init_segment() -> None:
    box = Outbox(limit=1000)
    assert not box.offer(b"I", b"p1", keyframe=False)  # nothing to start from
    assert box.offer(b"I", b"K1", keyframe=True) and box.offer(b"I", b"p2", keyframe=False)
    assert drain(box) == b"IK1p2" and box.skipped == 0  # what came before its start is not "skipped"
    assert box.sent_bytes == 5 and box.queued == 0 and box.fragments == 2


def test_a_new_init_segment_goes_before_the_keyframe_that_needs_it() -> None:
    box = Outbox(limit=1000)
    first, second = b"I1", b"I2"
    box.offer(first, b"K", keyframe=True)
    box.offer(first, b"K", keyframe=True)  # the same parameter sets: not again
    box.offer(second, b"K", keyframe=True)
    assert drain(box) == b"I1KKI2K"


def test_a_viewer_that_falls_behind_loses_whole_groups_and_resumes_at_a_keyframe_with_room() -> None:
    init = b"II"
    box = Outbox(limit=10)
    assert box.offer(init, b"KKKK", keyframe=True)  # 6 queued
    assert drain(box, 3) == b"IIK"  # a fragment under way
    assert box.offer(init, b"pp", keyframe=False)  # 5 queued
    assert not box.offer(init, b"pppppp", keyframe=False)  # 11 > 10: behind
    assert (box.behind, box.skipped, box.keyed) == (1, 2, False)
    assert not box.offer(init, b"pp", keyframe=False)  # no keyframe yet
    assert box.skipped == 3
    assert drain(box) == b"KKK"  # what had begun went out whole; the rest of the group did not
    assert box.offer(init, b"KKKK", keyframe=True)  # room again: on from the next keyframe
    assert drain(box) == b"KKKK" and box.keyed


def test_an_init_segment_lost_by_falling_behind_comes_again_with_the_next_keyframe() -> None:
    box = Outbox(limit=10)
    box.offer(b"I1", b"K", keyframe=True)
    assert drain(box) == b"I1K"
    assert box.offer(b"I2", b"KKK", keyframe=True)  # new parameter sets: I2 queued before it
    assert not box.offer(b"I2", b"pppppp", keyframe=False)  # behind: I2 and its keyframe go
    assert box.offer(b"I2", b"K", keyframe=True)
    assert drain(box) == b"I2K"


def test_a_keyframe_larger_than_the_limit_still_goes_to_a_viewer_that_keeps_up() -> None:
    box = Outbox(limit=4)
    assert box.offer(b"I", b"K" * 10, keyframe=True)
    assert box.queued == 11
    drain(box, 5)
    assert box.offer(b"I", b"p", keyframe=False)  # onto nothing but the one under way: it goes
    assert not box.offer(b"I", b"p", keyframe=False)  # a second waiting beyond the limit: behind
    assert box.behind == 1
    drain(box)
    assert box.offer(b"I", b"K" * 10, keyframe=True)  # nothing waiting: it goes
