"""Motion history on disk: a JSON record, a JPEG and a clip per event, bounded by count, size and free space.

Ids come from ``new_event_id`` (UTC start time + random hex) and are checked against that exact
pattern before they become file names: no id can address a file outside the events folder.

Built for an SD card in a Pi that loses power, has no real-time clock and fills up:

- Every file is written to a temporary file, fsynced, renamed into place, and the folder fsynced,
  so a power cut leaves the old file or the new one, never an empty or half one.
- Start-up removes temporary files, records that are not well-formed JSON objects (logged), JPEGs
  without a record and records whose snapshot is missing, and counts every byte it keeps.
- Order is a sequence number kept in each record, not the wall clock: after a Pi booted with its
  clock a year ahead and NTP set it right, new events are still the newest and are not pruned first.
- On a full disk (``ENOSPC``) the oldest events go and the write is tried again; the store keeps
  ``min_free_bytes`` free for the rest of the system, and an error never reaches the camera.
- A deleted event stays deleted, even if the event was still running and its end comes later.
- A clip grows frame by frame while its event runs; every frame counts in ``max_bytes`` at once,
  older events make room for it, and it goes with its event. One clip stops at half of ``max_bytes``
  (and at 1 GiB), so a flag flapping all day cannot push out every other event. A clip is an H.264
  MP4 (``<id>.mp4``, ``appliance.h264.mp4``: fragmented, so one cut short by a power cut plays to its
  last whole fragment once start-up has trimmed it) or, as earlier versions kept them and still may
  without PyAV, Motion-JPEG frames with an index (``appliance.history.clip_files``); both replay.
- When the disk is down to ``min_free_bytes``, ``make_room_first`` (continuous recordings on the same
  disk) gives up space before any event goes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import re
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from appliance.capture.clips import ClipFrame
from appliance.capture.encoder import EncodeError
from appliance.durable import durable_write, remove_leftovers
from appliance.h264.encoder import Packet
from appliance.h264.mp4 import Mp4Writer, probe, repair
from appliance.history.clip_files import DATA_SUFFIX, INDEX_SUFFIX, ClipIndex, ClipWriter, clip_paths, read_index
from appliance.motion.events import EventChange, new_event_id

if TYPE_CHECKING:
    from appliance.detection.objects import ObjectNews

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENT_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_WRITE_ATTEMPTS = 4  # a write that meets ENOSPC prunes the oldest events and tries again this often
MAX_CLIP_BYTES = 1 << 30
"""A clip stops here whatever ``max_bytes`` allows: its AVI download must stay within AVI 1.0's sizes."""
MP4_SUFFIX = ".mp4"
MAX_OBJECTS = 8
"""Objects kept per event (their best snapshots): the first ones that alerted."""
KEPT_KEYS = ("objects", "labels", "alert", "armed")
"""What detection and arming add to a record: kept when the event's end rewrites it."""


def mp4_summary(writer: Mp4Writer, recording: bool) -> dict[str, Any]:
    """An MP4 clip as an event's JSON shows it."""
    width, height = writer.size
    return {"format": "mp4", "frames": writer.frames, "seconds": round(writer.seconds, 2), "width": width,
            "height": height, "fps": writer.fps, "bytes": writer.bytes, "recording": recording,
            "started_at": round(writer.started_at, 3)}


class UnknownEvent(KeyError):
    """No event with that id (or the id is not an event id at all)."""


class EventStore:
    """The events folder, with an in-memory index rebuilt from it at start-up."""

    def __init__(self, folder: Path, max_count: int, max_bytes: int, min_free_bytes: int = 0,
                 free_bytes: Callable[[Path], int] | None = None,
                 make_room_first: Callable[[int], None] | None = None) -> None:
        self.folder = folder
        self.make_room_first = make_room_first  # frees space on this disk before events go (recordings)
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._min_free = min_free_bytes
        self._free_bytes = free_bytes or (lambda path: shutil.disk_usage(path).free)
        self._lock = threading.Lock()
        self._clip_grew = threading.Condition(self._lock)  # replays of a clip being recorded wait on it
        self._clips: dict[str, ClipWriter | Mp4Writer] = {}  # clips being recorded
        self._records: dict[str, dict[str, Any]] = {}
        self._sizes: dict[str, int] = {}
        self._deleted: OrderedDict[str, None] = OrderedDict()  # recent deletions, so late ends stay deleted
        self._next_seq = 1
        folder.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        remove_leftovers(self.folder)
        records = {}
        for path in self.folder.glob("*.json"):
            event_id = path.stem
            if not EVENT_ID.match(event_id):
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(record, dict) or record.get("id") != event_id:
                    raise ValueError("not an event record")
            except (OSError, ValueError) as exc:  # zero-length or truncated by a power cut, or foreign
                log.warning("removing unreadable event record %s: %s", path.name, exc)
                path.unlink(missing_ok=True)
                continue
            jpg = self.folder / f"{event_id}.jpg"
            if record.get("has_snapshot") and not jpg.exists():
                log.warning("removing event %s: its snapshot is missing", event_id)
                path.unlink(missing_ok=True)
                continue
            records[event_id] = record
        for pattern in ("*.jpg", "*" + DATA_SUFFIX, "*" + INDEX_SUFFIX, "*" + MP4_SUFFIX):
            for path in self.folder.glob(pattern):
                if path.name.split(".")[0] not in records:  # <id>.jpg, <id>.o3.jpg (an object's), ...
                    log.warning("removing %s: no event record belongs to it", path.name)
                    path.unlink(missing_ok=True)
        for event_id, record in records.items():
            record["clip"] = self._loaded_clip(event_id, record.get("clip"))
        # Old records have no sequence number: their ids (start time) order them, before every new one.
        ordered = sorted(records, key=lambda i: (int(records[i].get("seq", 0)) if str(records[i].get("seq", 0))
                                                 .isdigit() else 0, i))
        for seq, event_id in enumerate(ordered, start=1):
            record = records[event_id]
            record["seq"] = seq
            self._records[event_id] = record
            self._sizes[event_id] = self._size_on_disk(event_id)
        self._next_seq = len(ordered) + 1
        with self._lock:
            self._prune()

    def _loaded_clip(self, event_id: str, stored: Any) -> dict[str, Any] | None:
        """At start-up: a finished clip's summary is taken as stored (it was written after the clip's
        fsync), so start-up reads no clip of hundreds; one still recording when the power went is read
        back from its index, keeping its whole frames; an MP4 one is trimmed to its last whole fragment."""
        mp4 = self._mp4_path(event_id)
        if mp4.exists():
            if isinstance(stored, dict) and stored.get("recording") is False:
                return stored
            facts = probe(mp4) if repair(mp4) else None
            if facts is None:
                mp4.unlink(missing_ok=True)
                return None
            started = stored.get("started_at") if isinstance(stored, dict) else None
            return {"format": "mp4", "frames": facts.frames, "seconds": round(facts.seconds, 2),
                    "width": facts.width, "height": facts.height,
                    "fps": stored.get("fps") if isinstance(stored, dict) else None,
                    "bytes": mp4.stat().st_size, "recording": False, "started_at": started}
        if not all(path.exists() for path in clip_paths(self.folder, event_id)):
            return None
        if isinstance(stored, dict) and stored.get("recording") is False:
            return stored
        index = read_index(self.folder, event_id, check_frames=True)
        return {**index.summary(recording=False), "format": "mjpeg"} if index is not None and index.entries else None

    def _paths(self, event_id: str) -> tuple[Path, Path]:
        if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
            raise UnknownEvent(event_id)
        return self.folder / f"{event_id}.json", self.folder / f"{event_id}.jpg"

    def _mp4_path(self, event_id: str) -> Path:
        return self.folder / f"{event_id}{MP4_SUFFIX}"

    def object_path(self, event_id: str, number: int) -> Path:
        """Where the best snapshot of an event's ``number``-th object is (1 to ``MAX_OBJECTS``)."""
        self._paths(event_id)
        if not isinstance(number, int) or not 1 <= number <= MAX_OBJECTS:
            raise UnknownEvent(f"{event_id} object {number}")
        return self.folder / f"{event_id}.o{number}.jpg"

    def _object_paths(self, event_id: str) -> list[Path]:
        return [self.folder / f"{event_id}.o{number}.jpg" for number in range(1, MAX_OBJECTS + 1)]

    def _size_on_disk(self, event_id: str) -> int:
        paths = (*self._paths(event_id), *clip_paths(self.folder, event_id), self._mp4_path(event_id),
                 *self._object_paths(event_id))
        return sum(path.stat().st_size for path in paths if path.exists())

    # --- writing -------------------------------------------------------------------------------

    def save(self, record: dict[str, Any], jpeg: bytes | None = None) -> bool:
        """Create or replace an event's record (and its snapshot, when given), then apply the limits.

        False when the event was deleted meanwhile (its late end is dropped). Raises OSError when the
        disk refuses the write even after pruning everything older.
        """
        event_id = record["id"]
        json_path, jpg_path = self._paths(event_id)
        with self._lock:
            if event_id in self._deleted:
                return False
            seq = self._records.get(event_id, {}).get("seq")
            if seq is None:
                seq, self._next_seq = self._next_seq, self._next_seq + 1
            self._make_room(len(jpeg or b"") + 4096, keep=event_id)
            if jpeg is not None:
                self._write(jpg_path, jpeg, keep=event_id)
            kept = {key: value for key, value in self._records.get(event_id, {}).items() if key in KEPT_KEYS}
            stored = {**kept, **record, "seq": seq, "has_snapshot": jpg_path.exists(),
                      "clip": self._clip_summary(event_id)}
            self._keep_record(event_id, json_path, stored)
            return True

    def save_object(self, event_id: str, found: dict[str, Any], jpeg: bytes | None) -> bool:
        """Add or update an object seen in an event (``found``: its ``object_id``, ``label``, ``score``,
        ``box``, ``frame``), with its best snapshot; the record's ``labels`` and ``alert`` follow.
        False when the event is unknown or deleted, or already holds ``MAX_OBJECTS`` others."""
        json_path, _ = self._paths(event_id)
        with self._lock:
            record = self._records.get(event_id)
            if record is None or event_id in self._deleted:
                return False
            objects = [dict(obj) for obj in record.get("objects", [])]
            mine = next((obj for obj in objects if obj["object_id"] == found["object_id"]), None)
            if mine is None:
                if len(objects) >= MAX_OBJECTS:
                    return False
                mine = {"number": len(objects) + 1}
                objects.append(mine)
            mine.update({key: found[key] for key in ("object_id", "label", "score", "box", "frame")})
            if jpeg is not None:
                self._make_room(len(jpeg) + 4096, keep=event_id)
                self._write(self.object_path(event_id, mine["number"]), jpeg, keep=event_id)
                mine["has_snapshot"] = True
            stored = {**record, "objects": objects, "labels": sorted({obj["label"] for obj in objects}),
                      "alert": True}
            self._keep_record(event_id, json_path, stored)
            return True

    def object_snapshot(self, event_id: str, number: int) -> bytes:
        """The best snapshot of an event's ``number``-th object."""
        return self._read_picture(event_id, self.object_path(event_id, number), f"{event_id} object {number}")

    def _keep_record(self, event_id: str, json_path: Path, stored: dict[str, Any]) -> None:
        """Under the lock: write the event's record, count its bytes, apply the limits."""
        self._write(json_path, json.dumps(stored).encode(), keep=event_id)
        self._records[event_id] = stored
        self._sizes[event_id] = self._size_on_disk(event_id)
        self._prune()

    def _read_picture(self, event_id: str, path: Path, what: str) -> bytes:
        """A JPEG of a known event (its snapshot, an object's); ``UnknownEvent(what)`` when it is not there."""
        with self._lock:
            if event_id not in self._records:
                raise UnknownEvent(event_id)
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise UnknownEvent(what) from None

    def _write(self, path: Path, data: bytes, keep: str) -> None:
        """Under the lock: a durable write that frees space by pruning the oldest events on ENOSPC."""
        self._when_full_prune(lambda: durable_write(path, data), keep, path.name)

    def _when_full_prune(self, write: Callable[[], T], keep: str, what: str) -> T:
        """Under the lock: ``write()``; when the disk is full, remove the oldest events (never ``keep``)
        and try again, a few times; any other failure, or a disk still full, is raised."""
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                return write()
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or attempt == _WRITE_ATTEMPTS - 1 \
                        or not self._drop_oldest(keep, count=max(1, len(self._records) // 10)):
                    raise
                log.warning("disk full writing %s: removed the oldest events, trying again", what)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _make_room(self, needed: int, keep: str) -> None:
        """Under the lock: keep ``min_free_bytes`` free for the rest of the system, oldest events first."""
        if self._min_free <= 0:
            return
        if self.make_room_first is not None:
            try:
                self.make_room_first(needed)
            except Exception:  # the recordings' own failure must not stop an event being kept
                log.exception("the recordings could not make room on the disk")
        try:
            while self._free_bytes(self.folder) - needed < self._min_free and self._drop_oldest(keep, 1):
                pass
        except OSError as exc:
            log.warning("cannot read the free space of %s: %s", self.folder, exc)

    def _drop_oldest(self, keep: str, count: int) -> bool:
        """Under the lock: remove up to ``count`` oldest events other than ``keep``; False if none."""
        victims = [i for i in self._ordered() if i != keep][:count]
        for event_id in victims:
            self._remove(event_id, *self._paths(event_id))
        return bool(victims)

    def delete(self, event_id: str) -> None:
        json_path, jpg_path = self._paths(event_id)
        with self._lock:
            if event_id not in self._records:
                raise UnknownEvent(event_id)
            self._remove(event_id, json_path, jpg_path)
            self._deleted[event_id] = None
            while len(self._deleted) > 1000:
                self._deleted.popitem(last=False)

    def _remove(self, event_id: str, json_path: Path, jpg_path: Path) -> None:
        writer = self._clips.pop(event_id, None)
        if isinstance(writer, Mp4Writer):
            writer.abandon()
        elif writer is not None:
            writer.close(sync=False)
        for path in (jpg_path, *clip_paths(self.folder, event_id), self._mp4_path(event_id),
                     *self._object_paths(event_id), json_path):
            path.unlink(missing_ok=True)
        self._records.pop(event_id, None)
        self._sizes.pop(event_id, None)
        self._clip_grew.notify_all()

    def _ordered(self) -> list[str]:
        """Oldest first, by sequence number: the order events happened in, whatever the clock said."""
        return sorted(self._records, key=lambda i: self._records[i]["seq"])

    def _prune(self) -> None:
        """Oldest first, until both the count and the total size are within their limits."""
        ordered = self._ordered()
        total = sum(self._sizes.values())
        while ordered and (len(ordered) > self._max_count or total > self._max_bytes):
            oldest = ordered.pop(0)
            total -= self._sizes.get(oldest, 0)
            self._remove(oldest, *self._paths(oldest))

    # --- clips ---------------------------------------------------------------------------------

    def _clip_summary(self, event_id: str) -> dict[str, Any] | None:
        """Under the lock: the clip as the event's JSON shows it, live while it is being recorded."""
        writer = self._clips.get(event_id)
        if isinstance(writer, Mp4Writer):
            return mp4_summary(writer, recording=True)
        if writer is not None:
            return {**writer.index.summary(recording=True), "format": "mjpeg"}
        return self._records.get(event_id, {}).get("clip")

    def begin_clip(self, event_id: str, width: int, height: int, fps: float) -> bool:
        """Open the clip of an event (its record may come a moment later); False when the event was
        deleted already. Raises OSError when the disk refuses even after pruning."""
        self._paths(event_id)
        with self._lock:
            if event_id in self._deleted or event_id in self._clips or self._records.get(event_id, {}).get("clip"):
                return False
            self._make_room(65536, keep=event_id)

            def open_writer() -> ClipWriter:
                try:
                    return ClipWriter(self.folder, event_id, width, height, fps)
                except OSError:
                    for path in clip_paths(self.folder, event_id):  # what was created goes again
                        path.unlink(missing_ok=True)
                    raise

            writer = self._when_full_prune(open_writer, event_id, f"the clip of {event_id}")
            self._clips[event_id] = writer
            self._sizes[event_id] = self._sizes.get(event_id, 0) + writer.bytes
            return True

    def append_clip(self, event_id: str, jpeg: bytes, wall: float, mono: float) -> bool:
        """Add a frame to a Motion-JPEG clip being recorded, making room in ``max_bytes`` and on the
        disk from the oldest events. False when the clip is not recording (deleted, or it stopped at
        the limit).

        The frame goes to the page cache under the store's lock; the clip's fsync comes at its end,
        outside it (``finish_clip``), so a slow card does not hold up readers of the history."""
        return self._grow(event_id, ClipWriter, len(jpeg) + 64, lambda writer: writer.append(jpeg, wall, mono))

    def begin_mp4_clip(self, event_id: str, first: Packet, fps: float, wall_offset: float) -> bool:
        """Open the MP4 clip of an event with its first access unit, a keyframe (``wall_offset``: the
        wall clock minus the monotonic one, to date it). False when the event was deleted already or
        has a clip. Raises OSError when the disk refuses even after pruning."""
        self._paths(event_id)
        with self._lock:
            if event_id in self._deleted or event_id in self._clips or self._records.get(event_id, {}).get("clip"):
                return False
            self._make_room(65536 + len(first.data), keep=event_id)
            path = self._mp4_path(event_id)

            def open_writer() -> Mp4Writer:
                path.unlink(missing_ok=True)  # what a failed try left
                return Mp4Writer(path, first, fps, wall_offset)

            writer = self._when_full_prune(open_writer, event_id, f"the clip of {event_id}")
            self._clips[event_id] = writer
            self._sizes[event_id] = self._sizes.get(event_id, 0) + writer.bytes
            self._clip_grew.notify_all()
            return True

    def append_mp4_clip(self, event_id: str, packet: Packet) -> bool:
        """Add an access unit to an MP4 clip being recorded; as ``append_clip``. A picture of another
        size (the camera reopened at another resolution) cannot join its track: the clip ends there."""
        with self._lock:
            writer = self._clips.get(event_id)
            resized = isinstance(writer, Mp4Writer) and writer.size != packet.size
        if resized:
            self.finish_clip(event_id)
            return False
        return self._grow(event_id, Mp4Writer, len(packet.data) + 64, lambda writer: writer.append(packet))

    def _grow(self, event_id: str, kind: type, needed: int, append: Callable[[Any], Any]) -> bool:
        with self._lock:
            writer = self._clips.get(event_id)
            if not isinstance(writer, kind):
                return False
            full = writer.bytes + needed > min(self._max_bytes // 2, MAX_CLIP_BYTES)
            if full:
                log.warning("the clip of %s stops at %.0f s: one clip may take half of events.max_bytes, "
                            "and 1 GiB at most", event_id, self._clip_summary(event_id)["seconds"])
        if full:
            self.finish_clip(event_id)
            return False
        with self._lock:
            if self._clips.get(event_id) is not writer:
                return False  # deleted meanwhile
            self._make_room(needed, keep=event_id)
            while sum(self._sizes.values()) + needed > self._max_bytes and self._drop_oldest(event_id, 1):
                pass
            before = writer.bytes
            self._when_full_prune(lambda: append(writer), event_id, f"the clip of {event_id}")
            self._sizes[event_id] = self._sizes.get(event_id, 0) + writer.bytes - before
            self._clip_grew.notify_all()
            return True

    def finish_clip(self, event_id: str) -> dict[str, Any] | None:
        """End a clip: make it durable and write its final summary into the record, which is returned
        (None when the event is gone or has no record yet: its save writes the summary then). The
        fsync of the clip, which may take a while on an SD card, happens outside the store's lock."""
        with self._lock:
            writer = self._clips.pop(event_id, None)
            self._clip_grew.notify_all()
        if writer is None:
            return None
        try:
            writer.close()
        except OSError as exc:  # the MP4's last fragment did not reach the disk: it plays to the one before
            log.error("cannot finish the clip of %s: %s", event_id, exc)
        with self._lock:
            return self._record_clip(event_id, writer)

    def _record_clip(self, event_id: str, writer: ClipWriter | Mp4Writer) -> dict[str, Any] | None:
        """Under the lock: the finished clip's summary into its record, on disk too if the card takes it."""
        record = self._records.get(event_id)
        if record is None:
            return None
        if isinstance(writer, Mp4Writer):
            summary = mp4_summary(writer, recording=False) if writer.frames else None
        else:
            summary = {**writer.index.summary(recording=False), "format": "mjpeg"} if writer.index.entries else None
        record = {**record, "clip": summary}
        self._records[event_id] = record
        json_path, _ = self._paths(event_id)
        try:
            self._write(json_path, json.dumps(record).encode(), keep=event_id)
        except OSError as exc:  # the clip is whole on disk; the next start reads its figures from the index
            log.error("cannot save the clip summary of %s: %s", event_id, exc)
        self._sizes[event_id] = self._size_on_disk(event_id)
        return record

    def clip_format(self, event_id: str) -> str | None:
        """``mp4``, ``mjpeg`` (kept by earlier versions, or without PyAV), or None: no clip."""
        self._paths(event_id)
        with self._lock:
            if event_id not in self._records:
                raise UnknownEvent(event_id)
            writer = self._clips.get(event_id)
            if writer is not None:
                return "mp4" if isinstance(writer, Mp4Writer) else "mjpeg"
            clip = self._records[event_id].get("clip")
            return clip.get("format", "mjpeg") if isinstance(clip, dict) else None

    def mp4_clip(self, event_id: str) -> tuple[Path, bool]:
        """An MP4 clip to serve: its file, and whether it is still recording (it grows by fragments)."""
        if self.clip_format(event_id) != "mp4":
            raise UnknownEvent(event_id)
        with self._lock:
            return self._mp4_path(event_id), event_id in self._clips

    def clip(self, event_id: str) -> tuple[ClipIndex, Path, bool]:
        """A Motion-JPEG clip to read: its index as it stands, its data file and whether it is still
        recording."""
        self._paths(event_id)
        with self._lock:
            if event_id not in self._records:
                raise UnknownEvent(event_id)
            writer = self._clips.get(event_id)
            if isinstance(writer, Mp4Writer):
                raise UnknownEvent(event_id)
            if writer is not None:
                index = writer.index
                return ClipIndex(index.width, index.height, index.fps, list(index.entries)), writer.data_path, True
        index = read_index(self.folder, event_id)
        if index is None or not index.entries:
            raise UnknownEvent(event_id)
        return index, clip_paths(self.folder, event_id)[0], False

    def wait_clip(self, event_id: str, frames: int, timeout: float) -> bool:
        """Wait until a recording clip has more than ``frames`` frames or ends; False on timeout."""
        with self._lock:
            return self._clip_grew.wait_for(lambda: not isinstance(self._clips.get(event_id), ClipWriter)
                                            or len(self._clips[event_id].index.entries) > frames, timeout)

    def close_clips(self) -> None:
        """Shutdown: clips still recording end where they are, durable."""
        with self._lock:
            recording = list(self._clips)
        for event_id in recording:
            self.finish_clip(event_id)

    # --- reading -------------------------------------------------------------------------------

    def _public(self, event_id: str) -> dict[str, Any]:
        """Under the lock: the record as the API shows it (a recording clip's figures as they are now)."""
        record = self._records[event_id]
        return {**record, "clip": self._clip_summary(event_id)} if event_id in self._clips else record

    def list(self, offset: int = 0, limit: int = 50, label: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """Newest first; returns one page and the total count (of events with an object ``label``, if given)."""
        with self._lock:
            ids = self._ordered()[::-1]
            if label is not None:
                ids = [i for i in ids if label in self._records[i].get("labels", ())]
            return [self._public(i) for i in ids[offset:offset + limit]], len(ids)

    def count(self) -> int:
        with self._lock:
            return len(self._records)

    def get(self, event_id: str) -> dict[str, Any]:
        self._paths(event_id)
        with self._lock:
            if event_id not in self._records:
                raise UnknownEvent(event_id)
            return self._public(event_id)

    def snapshot(self, event_id: str) -> bytes:
        _, jpg_path = self._paths(event_id)
        return self._read_picture(event_id, jpg_path, event_id)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())


class EventRecorder:
    """A motion listener that saves events through the store on its own writer thread, and the sink
    that encodes and writes their clips there too (``appliance.capture.clips.ClipSink``).

    ``on_saved(kind, record)`` hears each event once it is on disk (``kind``: ``start``, ``end``,
    ``snapshot``, or ``clip`` when its clip is complete), so a page told about an event can load its
    snapshot at once.

    Clip frames wait for the writer in a queue of at most ``max_pending`` frames: when the card is
    too slow for them, new frames are dropped (and counted) rather than piling up in memory.
    """

    def __init__(self, store: EventStore, on_saved: Callable[[str, dict[str, Any]], None],
                 encode: Callable[[Any], bytes] | None = None, clip_fps: float = 10.0,
                 max_pending: int = 20, keep_motion_events: bool = True,
                 armed: Callable[[], bool] | None = None, keep_disarmed: bool = True) -> None:
        self._store = store
        self._keep_motion_events = keep_motion_events  # False: an event without an object alert goes at its end
        self._armed = armed  # whether armed now: an event records it at its start
        self._keep_disarmed = keep_disarmed  # False: an event that started disarmed goes at its end
        self._on_saved = on_saved
        self.encode = encode  # the JPEG encoder of clip frames; none: clips are not recorded
        self._clip_fps = clip_fps
        self._max_pending = max_pending
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._opened: set[str] = set()  # clips begun in the store (writer thread only)
        self._failed: set[str] = set()  # clips the disk refused: not tried again frame by frame
        self.clip_frames_encoded = 0
        self.clip_frames_dropped = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-writer")

    def on_motion(self, change: EventChange, jpeg: bytes | None) -> None:
        record = change.event.as_dict()
        if change.kind == "start" and self._armed is not None:
            record["armed"] = self._armed()
        with contextlib.suppress(RuntimeError):  # closed: the appliance is stopping
            self._writer.submit(self._save, change.kind, record, jpeg)

    def on_objects(self, news: ObjectNews) -> None:
        """An object alerted or was seen better: kept with its event, its best snapshot beside it."""
        if news.kind == "gone" or news.event_id is None:
            return
        with contextlib.suppress(RuntimeError):
            self._writer.submit(self._save_object, news)

    def _save_object(self, news: ObjectNews) -> None:
        try:
            if self._store.save_object(news.event_id or "", news.as_dict(), news.jpeg):
                self._on_saved("object", self._store.get(news.event_id or ""))
        except (OSError, UnknownEvent) as exc:
            log.error("cannot keep the %s seen in event %s: %s", news.label, news.event_id, exc)

    def save_snapshot(self, jpeg: bytes, taken_at: float) -> None:
        """Keep a snapshot taken on request (the button's long press) in the history beside motion."""
        record = {"id": new_event_id(taken_at), "kind": "snapshot", "started_at": taken_at, "ended_at": taken_at,
                  "box": None, "peak_score": 0.0, "peak_area": 0.0, "frames": 1}
        with contextlib.suppress(RuntimeError):
            self._writer.submit(self._save, "snapshot", record, jpeg)

    def _save(self, kind: str, record: dict[str, Any], jpeg: bytes | None) -> None:
        try:
            if not self._store.save(record, jpeg):
                return  # deleted while it was running: it stays deleted
            record = self._store.get(record["id"])
            unwanted = not self._keep_motion_events and not record.get("alert")  # no wanted object seen
            disarmed = not self._keep_disarmed and record.get("armed") is False  # it started disarmed
            if kind == "end" and (unwanted or disarmed):
                self._store.delete(record["id"])  # not kept, as configured
                self._on_saved("deleted", record)
                return
        except (OSError, UnknownEvent) as exc:  # a full card must not stop the camera
            log.error("cannot save motion event %s: %s", record["id"], exc)
            record = {**record, "has_snapshot": False}
        self._on_saved(kind, record)

    def counters(self) -> dict[str, int]:
        """Clip frames encoded, and dropped because the writer fell behind (``/api/status``)."""
        return {"frames_encoded": self.clip_frames_encoded, "frames_dropped": self.clip_frames_dropped}

    # --- clips (called on the capture thread: they only queue) -----------------------------------

    def clip_begin(self, event_id: str, frames: Any) -> None:
        self._submit(self._clip_begin, event_id, list(frames))

    def clip_frame(self, event_ids: tuple[str, ...], frame: ClipFrame) -> None:
        with self._pending_lock:
            if self._pending >= self._max_pending:
                self.clip_frames_dropped += 1
                return
            self._pending += 1
        if not self._submit(self._clip_frame, event_ids, frame):
            with self._pending_lock:
                self._pending -= 1

    def clip_end(self, event_id: str) -> None:
        self._submit(self._clip_end, event_id)

    def _submit(self, work: Callable[..., None], *args: Any) -> bool:
        try:
            self._writer.submit(work, *args)
            return True
        except RuntimeError:  # closed: the appliance is stopping
            return False

    # --- clips (the writer thread) ------------------------------------------------------------------

    def _clip_begin(self, event_id: str, frames: list[ClipFrame]) -> None:
        for frame in frames:
            self._append(event_id, frame)

    def _clip_frame(self, event_ids: tuple[str, ...], frame: ClipFrame) -> None:
        with self._pending_lock:
            self._pending -= 1
        for event_id in event_ids:
            self._append(event_id, frame)

    def _append(self, event_id: str, frame: ClipFrame) -> None:
        """Encode the frame (once, whichever clips it is in) and add it to the clip, opened at its first."""
        if event_id in self._failed or self.encode is None:
            return
        try:
            if frame.jpeg is None:
                frame.jpeg = self.encode(frame.image)
                frame.image = None  # the JPEG is all any clip needs from now on
                self.clip_frames_encoded += 1
            if event_id not in self._opened:
                if not self._store.begin_clip(event_id, frame.width, frame.height, self._clip_fps):
                    self._failed.add(event_id)  # deleted meanwhile: it stays deleted
                    return
                self._opened.add(event_id)
            if not self._store.append_clip(event_id, frame.jpeg, frame.wall, frame.mono):
                self._failed.add(event_id)  # deleted, or it stopped at the limit
        except (OSError, EncodeError) as exc:  # a full card must not stop the camera
            log.error("cannot record the clip of %s: %s", event_id, exc)
            self._failed.add(event_id)
            with contextlib.suppress(OSError):
                self._store.finish_clip(event_id)

    def _clip_end(self, event_id: str) -> None:
        self._failed.discard(event_id)
        self._opened.discard(event_id)
        try:
            record = self._store.finish_clip(event_id)
        except OSError as exc:
            log.error("cannot finish the clip of %s: %s", event_id, exc)
            return
        if record is not None:
            self._on_saved("clip", record)

    def flush(self) -> None:
        """Wait for queued writes (tests, shutdown)."""
        self._writer.submit(lambda: None).result(timeout=30)

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued within ``timeout`` (a stalled SD card must not hold up shutdown); clips
        still recording end durable where they are."""
        last = None
        with contextlib.suppress(RuntimeError):
            last = self._writer.submit(self._store.close_clips)
        self._writer.shutdown(wait=False)
        if last is not None:
            try:
                last.result(timeout=timeout)
            except TimeoutError:
                log.warning("event writes still pending after %.1f s at shutdown; leaving them", timeout)
