"""MP4 files made of the encoder's access units, as they come: no re-encode, one file per clip or segment.

The files are *fragmented* MP4 (the header, then a ``moof``+``mdat`` fragment per keyframe
interval), so a file being written plays in every browser and phone from its first fragment, and a
file cut short by ``kill -9`` or a power cut plays up to its last whole fragment: ``repair`` cuts
off the partial one at start-up. FFmpeg's MP4 muxer (through PyAV) writes them from the Annex B
access units as they are, on a stream with no codec context (``add_mux_stream``: no encoder is
opened to write a file, which would cost an x264 instance and its threads per file). With
``delay_moov`` the header waits for the first fragment and takes the parameter sets from its
keyframe; each fragment reaches the file when the next keyframe starts one.

The muxer writes through ``_CountingFile``: the owner knows every byte on disk as it grows (for the
history's and the recordings' limits), a write the disk refuses is an ``OSError`` with its errno
(``ENOSPC``, ``EROFS``, ``EIO``), and ``close`` fsyncs the file before it counts as finished.
"""

from __future__ import annotations

import contextlib
import fractions
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from appliance.h264.encoder import CLOCK, Packet, _pyav

log = logging.getLogger(__name__)

MOVFLAGS = "frag_keyframe+delay_moov+default_base_moof"


class _CountingFile:
    """The file the muxer writes to: unbuffered (a refused write leaves nothing behind in a buffer),
    counting what reached the disk. After ``discard()`` writes are swallowed: an abandoned file's
    muxer may still try to finish it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb",
                                           buffering=0)
        self.written = 0
        self._discarding = False

    def write(self, data: Any) -> int:
        if self._discarding:
            return len(data)
        view = memoryview(data)
        while view:
            written = self._handle.write(view)
            if not written:
                raise OSError(f"cannot write to {self.path}: the disk took nothing")
            self.written += written
            view = view[written:]
        return len(data)

    def tell(self) -> int:
        return self.written

    def seekable(self) -> bool:
        return False  # a fragmented file is written straight through: nothing is ever patched back

    def flush(self) -> None:
        """Nothing is buffered here; the muxer's flush reaches the kernel with each write."""

    def discard(self) -> None:
        self._discarding = True

    def sync_and_close(self, sync: bool) -> None:
        try:
            if sync and not self._discarding:
                os.fsync(self._handle.fileno())
        finally:
            self._handle.close()


class Mp4Writer:
    """One fragmented MP4 file being written: opened with its first packet, a keyframe.

    ``append`` never re-encodes; ``close`` finishes and fsyncs it; ``abandon`` lets it go as it is
    on disk (after an error), its last whole fragment the end of what plays.
    """

    def __init__(self, path: Path, first: Packet, fps: float, wall_offset: float) -> None:
        if not first.keyframe:
            raise ValueError("an MP4 file starts with a keyframe")
        av = _pyav()
        self.path = path
        self.size = first.size
        self.fps = fps
        self.first_at = first.captured_at
        self.last_at = first.captured_at
        self.started_at = first.captured_at + wall_offset  # wall clock of the first frame
        self.frames = 0
        self._period = max(1, round(CLOCK / fps))
        self._last_pts = -1
        self._time_base = fractions.Fraction(1, CLOCK)
        self._file = _CountingFile(path)
        try:
            self._container = av.open(self._file, "w", format="mp4",
                                      options={"movflags": MOVFLAGS, "flush_packets": "1"})
            self._stream = self._container.add_mux_stream(
                "h264", rate=fractions.Fraction(fps).limit_denominator(1001), width=first.size[0],
                height=first.size[1], time_base=self._time_base)
            self._packet = av.Packet
            self.append(first)
        except BaseException:
            self.abandon()
            raise

    @property
    def bytes(self) -> int:
        """Bytes on disk so far (a fragment reaches the disk when the next keyframe starts one)."""
        return self._file.written

    @property
    def seconds(self) -> float:
        """From the first frame to one frame period after the last: what a player shows."""
        return self.last_at - self.first_at + 1.0 / self.fps if self.frames else 0.0

    def append(self, packet: Packet) -> None:
        """Add one access unit, stamped with its capture time; raises OSError when the disk refuses."""
        pts = max(round((packet.captured_at - self.first_at) * CLOCK), self._last_pts + 1)
        out = self._packet(packet.data)
        out.stream = self._stream
        out.time_base = self._time_base
        out.pts = out.dts = pts
        out.duration = self._period
        out.is_keyframe = packet.keyframe
        self._container.mux(out)
        self._last_pts = pts
        self.last_at = packet.captured_at
        self.frames += 1

    def close(self, sync: bool = True) -> None:
        """Write the last fragment and fsync the file (``sync`` False: a file about to be deleted)."""
        try:
            self._container.close()
        except BaseException:
            self.abandon()
            raise
        self._file.sync_and_close(sync)

    def abandon(self) -> None:
        """Let the file go as it is on disk: what the muxer still holds is dropped, never written."""
        handle = getattr(self, "_file", None)  # None: the file itself could not be made
        if handle is None:
            return
        handle.discard()
        container = getattr(self, "_container", None)
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        with contextlib.suppress(OSError):
            handle.sync_and_close(sync=False)


# --- after a cut -----------------------------------------------------------------------------------


def _boxes(handle: BinaryIO, size: int) -> list[tuple[str, int, int]]:
    """The top-level boxes that lie whole inside the file: (type, offset, length); stops at the
    first one cut short."""
    boxes = []
    at = 0
    while at + 8 <= size:
        handle.seek(at)
        head = handle.read(16)
        length, kind = struct.unpack(">I4s", head[:8])
        if length == 1 and len(head) == 16:
            length = struct.unpack(">Q", head[8:16])[0]
        elif length == 0:
            length = size - at
        if length < 8 or at + length > size:
            break
        boxes.append((kind.decode("latin-1"), at, length))
        at += length
    return boxes


def repair(path: Path) -> bool:
    """Cut a fragmented MP4 left by a cut (``kill -9``, a power cut, a full disk) to its last whole
    fragment, so it plays to there and ends cleanly. False when no whole fragment is in it (the
    caller removes it)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            boxes = _boxes(handle, size)
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return False
    kinds = [kind for kind, _, _ in boxes]
    if "moov" not in kinds:
        return False
    end = None
    for number, (kind, at, length) in enumerate(boxes):
        whole_fragment = kind == "mdat" and number > 0 and boxes[number - 1][0] == "moof"
        if whole_fragment or (kind == "mfra" and end is not None):  # mfra: the index a finished file ends with
            end = at + length
    if end is None:
        return False
    if end < size:
        with open(path, "r+b") as handle:
            handle.truncate(end)
            os.fsync(handle.fileno())
        log.warning("%s: cut to its last whole fragment (%d of %d bytes)", path.name, end, size)
    return True


@dataclass(frozen=True)
class Mp4Facts:
    """What a finished file holds, read back from it (at start-up, for a file whose figures were lost)."""

    frames: int
    seconds: float
    width: int
    height: int


def probe(path: Path) -> Mp4Facts | None:
    """Count the frames of an MP4 file and its length, without decoding; None when it cannot be read."""
    try:
        av = _pyav()
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames, first, last, duration = 0, None, None, 0
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                frames += 1
                first = packet.pts if first is None else min(first, packet.pts)
                if last is None or packet.pts >= last:
                    last, duration = packet.pts, packet.duration or 0
            if not frames or first is None or last is None:
                return None
            seconds = float((last - first + duration) * stream.time_base)
            return Mp4Facts(frames, seconds, stream.codec_context.width, stream.codec_context.height)
    except Exception as exc:  # FFmpeg's errors are several classes: any means the file does not play
        log.warning("cannot read %s: %s", path, exc)
        return None
