"""Motion history on disk: one JSON record and one JPEG per event, bounded by count, size and free space.

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
from typing import Any

from appliance.durable import TEMP_PREFIX, durable_write
from appliance.motion_events import EventChange, new_event_id

log = logging.getLogger(__name__)

EVENT_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_WRITE_ATTEMPTS = 4  # a write that meets ENOSPC prunes the oldest events and tries again this often


class UnknownEvent(KeyError):
    """No event with that id (or the id is not an event id at all)."""


class EventStore:
    """The events folder, with an in-memory index rebuilt from it at start-up."""

    def __init__(self, folder: Path, max_count: int, max_bytes: int, min_free_bytes: int = 0,
                 free_bytes: Callable[[Path], int] | None = None) -> None:
        self.folder = folder
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._min_free = min_free_bytes
        self._free_bytes = free_bytes or (lambda path: shutil.disk_usage(path).free)
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._sizes: dict[str, int] = {}
        self._deleted: OrderedDict[str, None] = OrderedDict()  # recent deletions, so late ends stay deleted
        self._next_seq = 1
        folder.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        for leftover in self.folder.glob(TEMP_PREFIX + "*"):
            leftover.unlink(missing_ok=True)
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
        for jpg in self.folder.glob("*.jpg"):
            if jpg.stem not in records:
                log.warning("removing %s: no event record belongs to it", jpg.name)
                jpg.unlink(missing_ok=True)
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

    def _paths(self, event_id: str) -> tuple[Path, Path]:
        if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
            raise UnknownEvent(event_id)
        return self.folder / f"{event_id}.json", self.folder / f"{event_id}.jpg"

    def _size_on_disk(self, event_id: str) -> int:
        return sum(path.stat().st_size for path in self._paths(event_id) if path.exists())

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
            stored = {**record, "seq": seq, "has_snapshot": jpg_path.exists()}
            self._write(json_path, json.dumps(stored).encode(), keep=event_id)
            self._records[event_id] = stored
            self._sizes[event_id] = self._size_on_disk(event_id)
            self._prune()
            return True

    def _write(self, path: Path, data: bytes, keep: str) -> None:
        """Under the lock: a durable write that frees space by pruning the oldest events on ENOSPC."""
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                durable_write(path, data)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or attempt == _WRITE_ATTEMPTS - 1 \
                        or not self._drop_oldest(keep, count=max(1, len(self._records) // 10)):
                    raise
                log.warning("disk full writing %s: removed the oldest events, trying again", path.name)

    def _make_room(self, needed: int, keep: str) -> None:
        """Under the lock: keep ``min_free_bytes`` free for the rest of the system, oldest events first."""
        if self._min_free <= 0:
            return
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
        jpg_path.unlink(missing_ok=True)
        json_path.unlink(missing_ok=True)
        self._records.pop(event_id, None)
        self._sizes.pop(event_id, None)

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

    # --- reading -------------------------------------------------------------------------------

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        """Newest first; returns one page and the total count."""
        with self._lock:
            ids = self._ordered()[::-1]
            return [self._records[i] for i in ids[offset:offset + limit]], len(ids)

    def count(self) -> int:
        with self._lock:
            return len(self._records)

    def get(self, event_id: str) -> dict[str, Any]:
        self._paths(event_id)
        with self._lock:
            try:
                return self._records[event_id]
            except KeyError:
                raise UnknownEvent(event_id) from None

    def snapshot(self, event_id: str) -> bytes:
        _, jpg_path = self._paths(event_id)
        with self._lock:
            if event_id not in self._records:
                raise UnknownEvent(event_id)
            try:
                return jpg_path.read_bytes()
            except FileNotFoundError:
                raise UnknownEvent(event_id) from None

    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())


class EventRecorder:
    """A motion listener that saves events through the store on its own writer thread.

    ``on_saved(kind, record)`` hears each event once it is on disk (``kind``: ``start``, ``end`` or
    ``snapshot``), so a page told about an event can load its snapshot at once.
    """

    def __init__(self, store: EventStore, on_saved: Callable[[str, dict[str, Any]], None]) -> None:
        self._store = store
        self._on_saved = on_saved
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-writer")

    def on_motion(self, change: EventChange, jpeg: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # closed: the appliance is stopping
            self._writer.submit(self._save, change.kind, change.event.as_dict(), jpeg)

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
        except (OSError, UnknownEvent) as exc:  # a full card must not stop the camera
            log.error("cannot save motion event %s: %s", record["id"], exc)
            record = {**record, "has_snapshot": False}
        self._on_saved(kind, record)

    def flush(self) -> None:
        """Wait for queued writes (tests, shutdown)."""
        self._writer.submit(lambda: None).result(timeout=30)

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued within ``timeout`` (a stalled SD card must not hold up shutdown)."""
        last = None
        with contextlib.suppress(RuntimeError):
            last = self._writer.submit(lambda: None)
        self._writer.shutdown(wait=False)
        if last is not None:
            try:
                last.result(timeout=timeout)
            except TimeoutError:
                log.warning("event writes still pending after %.1f s at shutdown; leaving them", timeout)
