"""A clip on disk: its JPEGs one after another in ``<id>.mjpeg``, and ``<id>.idx`` saying where each is.

Nothing is re-encoded, ever: the frames are written once as they come, and a replay or a download
reads them back as they are (``ffmpeg -f mjpeg -i <id>.mjpeg`` plays the data file as it stands).

The index is JSON lines: a header (size, rate), then ``[offset, size, t, wall]`` per frame, ``t``
in seconds from the clip's first frame on the monotonic clock (so a clock step cannot bend its
pace) and ``wall`` the frame's wall-clock time. Both files only grow, and an index line is written
after its frame, so a power cut leaves at worst a last frame or line cut short: reading drops every
entry that does not point at a whole JPEG inside the data file, and the clip keeps the rest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from appliance.durable import fsync_directory

log = logging.getLogger(__name__)

DATA_SUFFIX = ".mjpeg"
INDEX_SUFFIX = ".idx"
_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"


@dataclass(frozen=True)
class ClipEntry:
    """Where one frame is in the data file and when it was taken."""

    offset: int
    size: int
    t: float
    wall: float


@dataclass
class ClipIndex:
    """What a clip holds: its frame size and every frame that is whole on disk."""

    width: int
    height: int
    fps: float
    entries: list[ClipEntry] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """From the first frame to one frame period after the last: what a player shows."""
        if not self.entries:
            return 0.0
        return self.entries[-1].t + 1.0 / self.fps

    @property
    def data_bytes(self) -> int:
        return sum(entry.size for entry in self.entries)

    def summary(self, recording: bool) -> dict[str, Any]:
        """The clip as an event's JSON shows it."""
        return {"frames": len(self.entries), "seconds": round(self.seconds, 2), "width": self.width,
                "height": self.height, "fps": self.fps, "bytes": self.data_bytes, "recording": recording,
                "started_at": self.entries[0].wall if self.entries else None}


def clip_paths(folder: Path, event_id: str) -> tuple[Path, Path]:
    return folder / f"{event_id}{DATA_SUFFIX}", folder / f"{event_id}{INDEX_SUFFIX}"


class ClipWriter:
    """Appends frames to one clip; ``close()`` makes it durable. Used under the store's lock."""

    def __init__(self, folder: Path, event_id: str, width: int, height: int, fps: float) -> None:
        self.data_path, self.index_path = clip_paths(folder, event_id)
        self.index = ClipIndex(width, height, fps)
        self._first_mono: float | None = None
        self._data = _create(self.data_path)
        try:
            self._index_file = _create(self.index_path)
        except OSError:
            self._data.close()
            raise
        header = json.dumps({"clip": 1, "width": width, "height": height, "fps": fps}) + "\n"
        self._write_index(header.encode())
        self.bytes = len(header)
        fsync_directory(folder)  # the two names survive a power cut from the start

    def append(self, jpeg: bytes, wall: float, mono: float) -> int:
        """Write one frame and its index line; returns the bytes added to the disk. On OSError (a full
        card) what was half written is cut off again, so the files stay whole."""
        if self._first_mono is None:
            self._first_mono = mono
        offset = self._data.tell()
        index_at = self._index_file.tell()
        line = json.dumps([offset, len(jpeg), round(mono - self._first_mono, 4), round(wall, 4)]).encode() + b"\n"
        try:
            _write_all(self._data, jpeg)
            self._write_index(line)
        except OSError:
            self._cut_back(offset, index_at)
            raise
        self.index.entries.append(ClipEntry(offset, len(jpeg), mono - self._first_mono, wall))
        self.bytes += len(jpeg) + len(line)
        return len(jpeg) + len(line)

    def _write_index(self, line: bytes) -> None:
        _write_all(self._index_file, line)

    def _cut_back(self, data_at: int, index_at: int) -> None:
        for handle, at in ((self._data, data_at), (self._index_file, index_at)):
            with contextlib.suppress(OSError, ValueError):
                handle.seek(at)
                handle.truncate()

    def close(self, sync: bool = True) -> None:
        """Flush and fsync both files (``sync`` False: a clip being deleted needs no durability)."""
        for handle in (self._data, self._index_file):
            try:
                if sync and not handle.closed:
                    os.fsync(handle.fileno())
            except OSError as exc:
                log.warning("could not sync clip file %s: %s", handle.name, exc)
            finally:
                with contextlib.suppress(OSError):
                    handle.close()


def _create(path: Path) -> BinaryIO:
    """A new, empty file only its owner reads (as every picture of the appliance), held open while
    recording. Unbuffered: a write the disk refuses leaves nothing behind in a buffer that a later
    flush would write after the cut-back."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb", buffering=0)


def _write_all(handle: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = handle.write(view)
        if not written:
            raise OSError(f"cannot write to {handle.name}: the disk took nothing")
        view = view[written:]


def read_index(folder: Path, event_id: str, check_frames: bool = False) -> ClipIndex | None:
    """The clip of ``event_id`` as it is on disk, keeping the entries that lie inside the data file;
    None when it has none. ``check_frames``: also look at each frame's JPEG markers, for a clip that
    was still being written when the power went (a finished clip was fsynced whole)."""
    data_path, index_path = clip_paths(folder, event_id)
    try:
        data_size = data_path.stat().st_size
        lines = index_path.read_bytes().split(b"\n")
        header = json.loads(lines[0])
        index = ClipIndex(int(header["width"]), int(header["height"]), float(header["fps"]))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    with open(data_path, "rb") as data:
        for line in lines[1:]:
            try:
                offset, size, t, wall = json.loads(line)
                entry = ClipEntry(int(offset), int(size), float(t), float(wall))
            except (ValueError, TypeError):
                break  # a line cut short by a power cut: the frames after it were never indexed
            if entry.offset + entry.size > data_size or (check_frames and not _whole_jpeg(data, entry)):
                break
            index.entries.append(entry)
    return index


def _whole_jpeg(data: BinaryIO, entry: ClipEntry) -> bool:
    data.seek(entry.offset)
    head = data.read(2)
    data.seek(entry.offset + entry.size - 2)
    return head == _SOI and data.read(2) == _EOI
