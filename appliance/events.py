"""Motion history on disk: one JSON record and one JPEG per event, bounded by count and size.

Ids come from ``new_event_id`` (UTC start time + random hex), so name order is time order and an id
is checked against that exact pattern before it becomes a file name: no id can address a file
outside the events folder. Files are written atomically, so a power cut leaves whole records.
Writes happen on the store's own writer thread, never on the capture thread: an SD card can stall
for a second and the camera must not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from appliance.motion_events import EventChange, new_event_id

log = logging.getLogger(__name__)

EVENT_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


class UnknownEvent(KeyError):
    """No event with that id (or the id is not an event id at all)."""


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EventStore:
    """The events folder, with an in-memory index rebuilt from it at start-up."""

    def __init__(self, folder: Path, max_count: int, max_bytes: int) -> None:
        self.folder = folder
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._sizes: dict[str, int] = {}
        folder.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        for path in self.folder.glob("*.json"):
            event_id = path.stem
            if not EVENT_ID.match(event_id):
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable event record %s: %s", path.name, exc)
                continue
            self._records[event_id] = record
            self._sizes[event_id] = self._size_on_disk(event_id)
        for leftover in self.folder.glob(".tmp-*"):
            leftover.unlink(missing_ok=True)
        with self._lock:
            self._prune()

    def _paths(self, event_id: str) -> tuple[Path, Path]:
        if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
            raise UnknownEvent(event_id)
        return self.folder / f"{event_id}.json", self.folder / f"{event_id}.jpg"

    def _size_on_disk(self, event_id: str) -> int:
        return sum(path.stat().st_size for path in self._paths(event_id) if path.exists())

    # --- writing -------------------------------------------------------------------------------

    def save(self, record: dict[str, Any], jpeg: bytes | None = None) -> None:
        """Create or replace an event's record (and its snapshot, when given), then apply the limits."""
        event_id = record["id"]
        json_path, jpg_path = self._paths(event_id)
        with self._lock:
            if jpeg is not None:
                _atomic_write(jpg_path, jpeg)
            stored = {**record, "has_snapshot": jpg_path.exists()}
            _atomic_write(json_path, json.dumps(stored).encode())
            self._records[event_id] = stored
            self._sizes[event_id] = self._size_on_disk(event_id)
            self._prune()

    def delete(self, event_id: str) -> None:
        json_path, jpg_path = self._paths(event_id)
        with self._lock:
            if event_id not in self._records:
                raise UnknownEvent(event_id)
            self._remove(event_id, json_path, jpg_path)

    def _remove(self, event_id: str, json_path: Path, jpg_path: Path) -> None:
        jpg_path.unlink(missing_ok=True)
        json_path.unlink(missing_ok=True)
        self._records.pop(event_id, None)
        self._sizes.pop(event_id, None)

    def _prune(self) -> None:
        """Oldest first, until both the count and the total size are within their limits."""
        ordered = sorted(self._records)
        total = sum(self._sizes.values())
        while ordered and (len(ordered) > self._max_count or total > self._max_bytes):
            oldest = ordered.pop(0)
            total -= self._sizes.get(oldest, 0)
            self._remove(oldest, *self._paths(oldest))

    # --- reading -------------------------------------------------------------------------------

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        """Newest first; returns one page and the total count."""
        with self._lock:
            ids = sorted(self._records, reverse=True)
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
            self._store.save(record, jpeg)
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
