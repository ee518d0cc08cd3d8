"""The recordings folder: what is kept in it, what must go, and whether it can be written at all.

Layout (all times UTC, so names sort and never repeat when the clock goes back an hour)::

    <folder>/continuous/2026-12-06/231512.345_60.067.mp4   start HHMMSS.mmm, length in seconds
    <folder>/continuous/2026-12-06/231612.412.part.mp4     being written
    <folder>/timelapse/20261206T000003Z_2880f.mp4          first frame, frame count
    <folder>/timelapse/20261207T000001Z.part.mp4           being written

A file being written ends in ``.part.mp4`` and gets its final name (with its figures) once it is
whole and fsynced. Start-up (``load``) trims a ``.part.mp4`` left by a cut to its last whole
fragment and names it, or removes it when nothing in it plays.

Retention, in tiers: continuous footage is kept ``keep_days`` and ``max_bytes``, timelapses their
own ``keep_days``; when the disk is down to ``events.min_free_bytes``, the oldest continuous footage
goes first, and it is what the event history asks to give way (``make_room``) before any event goes.

The folder may be a NAS share. It is never created here (except the default one, at start-up, by
the appliance): a share that is gone, did not mount (``require_mount``), turned read-only or filled
up is a *fault*, reported with what failed and since when, and tried again every
``retry_seconds``; nothing already kept is touched by a failed write.
"""

from __future__ import annotations

import bisect
import calendar
import contextlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from appliance.config import RecordingSettings
from appliance.durable import fsync_directory
from appliance.h264.mp4 import Mp4Writer, probe, repair

log = logging.getLogger(__name__)

PART = ".part.mp4"
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SEGMENT = re.compile(r"^(\d{6}\.\d{3})_(\d+\.\d{3})\.mp4$")
SEGMENT_PART = re.compile(r"^(\d{6}\.\d{3})\.part\.mp4$")
TIMELAPSE = re.compile(r"^(\d{8}T\d{6}Z)_(\d+)f\.mp4$")
TIMELAPSE_PART = re.compile(r"^(\d{8}T\d{6}Z)\.part\.mp4$")
Kind = Literal["continuous", "timelapse"]


@dataclass(frozen=True)
class Recording:
    """One finished file: when its first frame was taken, how long it plays, how big it is."""

    kind: Kind
    name: str  # its path inside the folder, e.g. continuous/2026-12-06/231512.345_60.067.mp4
    start: float  # wall clock of the first frame
    seconds: float  # continuous: the time it covers; timelapse: how long it plays
    bytes: int
    frames: int | None = None  # timelapses

    def as_dict(self, url: str) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "start": round(self.start, 3), "seconds": self.seconds,
                                "bytes": self.bytes, "url": url}
        if self.frames is not None:
            body["frames"] = self.frames
        return body


def segment_name(start: float, seconds: float | None = None) -> str:
    """``continuous/DAY/HHMMSS.mmm_SECONDS.mp4`` for a segment starting at wall time ``start``
    (``.part.mp4`` while ``seconds`` is not known yet)."""
    whole, millis = divmod(round(start * 1000), 1000)  # in whole milliseconds: a name read back is the same
    stamp = time.gmtime(whole)
    base = f"continuous/{time.strftime('%Y-%m-%d', stamp)}/{time.strftime('%H%M%S', stamp)}.{millis:03d}"
    return base + (PART if seconds is None else f"_{seconds:.3f}.mp4")


def timelapse_name(start: float, frames: int | None = None) -> str:
    base = "timelapse/" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))
    return base + (PART if frames is None else f"_{frames}f.mp4")


def _segment_start(day: str, clock: str) -> float:
    whole, _, millis = clock.partition(".")
    return calendar.timegm(time.strptime(day + whole, "%Y-%m-%d%H%M%S")) + int(millis) / 1000


def _timelapse_start(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")))


class RecordingsFolder:
    """The catalogue of one recordings folder; safe from any thread. Files are written by one disk
    thread (``appliance.recording.worker``); the web reads the catalogue."""

    def __init__(self, folder: Path, settings: RecordingSettings, min_free_bytes: int,
                 events_folder: Path | None = None, wall: Callable[[], float] = time.time,
                 free_bytes: Callable[[Path], int] | None = None) -> None:
        self.folder = folder
        self._events_folder = events_folder
        self._with_events = False  # on the events' disk: found out by ``load``, on the disk thread
        self._settings = settings
        self._min_free = min_free_bytes
        self._wall = wall
        self._free_bytes = free_bytes or (lambda path: shutil.disk_usage(path).free)
        self._lock = threading.Lock()
        self._files: dict[Kind, list[Recording]] = {"continuous": [], "timelapse": []}
        self.loaded = False
        self.fault: str | None = None
        self.fault_since: float | None = None
        self.faults = 0
        self.removed_for_space = 0
        self.on_change: Callable[[], None] | None = None  # hears a fault come or go (MQTT publishes it)

    # --- state of the folder ----------------------------------------------------------------------

    def unwritable(self) -> str | None:
        """Why nothing can be written now (gone, not mounted), or None. A read-only or full disk
        shows when a write is refused."""
        if not self.folder.is_dir():
            return f"the recording folder {self.folder} is missing"
        if self._settings.require_mount and not os.path.ismount(self.folder):
            return f"the recording folder {self.folder} is not mounted (recording.require_mount)"
        return None

    def report(self, problem: str) -> None:
        """A write failed: say what, once, and since when (the status and MQTT show it)."""
        with self._lock:
            if self.fault == problem:
                return
            first = self.fault is None
            self.fault = problem
            self.faults += 1
            if first:
                self.fault_since = self._wall()
        log.error("recording: %s", problem)
        self._changed()

    def recovered(self) -> None:
        with self._lock:
            if self.fault is None:
                return
            was, self.fault, self.fault_since = self.fault, None, None
        log.warning("recording resumed in %s (after: %s)", self.folder, was)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a listener's bug must not stop the recordings
                log.exception("a recording fault listener failed")

    # --- start-up --------------------------------------------------------------------------------

    def load(self) -> None:
        """Read what the folder holds; trim and name what a cut left half written. Runs on the disk
        thread: a NAS that does not answer holds up nothing else."""
        if self._events_folder is not None:
            self._with_events = same_disk(self.folder, self._events_folder)
        files: dict[Kind, list[Recording]] = {"continuous": [], "timelapse": []}
        continuous = self.folder / "continuous"
        if continuous.is_dir():
            for day in sorted(continuous.iterdir()):
                if not DAY.match(day.name) or not day.is_dir():
                    continue
                for path in sorted(day.iterdir()):
                    found = self._loaded_segment(day.name, path)
                    if found is not None:
                        files["continuous"].append(found)
        timelapse = self.folder / "timelapse"
        if timelapse.is_dir():
            for path in sorted(timelapse.iterdir()):
                found = self._loaded_timelapse(path)
                if found is not None:
                    files["timelapse"].append(found)
        with self._lock:
            for kind, found_files in files.items():
                known = {recording.name for recording in self._files[kind]}
                self._files[kind] = sorted([*self._files[kind], *(f for f in found_files if f.name not in known)],
                                           key=lambda recording: recording.start)
            self.loaded = True
        self.prune()

    def _loaded_segment(self, day: str, path: Path) -> Recording | None:
        name = f"continuous/{day}/{path.name}"
        if match := SEGMENT.match(path.name):
            return Recording("continuous", name, _segment_start(day, match[1]), float(match[2]), path.stat().st_size)
        if match := SEGMENT_PART.match(path.name):
            facts = probe(path) if repair(path) else None
            if facts is None:
                log.warning("removing %s: a cut left nothing in it that plays", name)
                path.unlink(missing_ok=True)
                return None
            start = _segment_start(day, match[1])
            final = path.with_name(Path(segment_name(start, facts.seconds)).name)
            path.rename(final)
            fsync_directory(path.parent)
            log.warning("%s: left by a cut, kept as %s (%.1f s)", name, final.name, facts.seconds)
            return Recording("continuous", f"continuous/{day}/{final.name}", start, round(facts.seconds, 3),
                             final.stat().st_size)
        return None

    def _loaded_timelapse(self, path: Path) -> Recording | None:
        if match := TIMELAPSE.match(path.name):
            frames = int(match[2])
            return Recording("timelapse", f"timelapse/{path.name}", _timelapse_start(match[1]),
                             round(frames / self._settings.timelapse.fps, 3), path.stat().st_size, frames)
        if match := TIMELAPSE_PART.match(path.name):
            facts = probe(path) if repair(path) else None
            if facts is None:
                path.unlink(missing_ok=True)
                return None
            final = path.with_name(Path(timelapse_name(_timelapse_start(match[1]), facts.frames)).name)
            path.rename(final)
            fsync_directory(path.parent)
            return self._loaded_timelapse(final)
        return None

    # --- writing (the disk thread) ----------------------------------------------------------------

    def part_path(self, name: str) -> Path:
        """Where a new file named ``name`` (a ``.part.mp4``) is written; its folders are made below
        the recording folder, never the folder itself."""
        path = self.folder / name
        for parent in reversed(path.relative_to(self.folder).parents[:-1]):
            (self.folder / parent).mkdir(exist_ok=True)
        return path

    def finished(self, kind: Kind, writer: Mp4Writer, final_name: str, seconds: float,
                 frames: int | None = None) -> Recording:
        """A file written whole: closed (fsynced), given its final name, and in the catalogue.
        Raises OSError when the disk refuses any of it (then ``give_up``)."""
        writer.close()
        final = self.folder / final_name
        writer.path.rename(final)
        fsync_directory(final.parent)
        recording = Recording(kind, final_name, writer.started_at, round(seconds, 3), final.stat().st_size, frames)
        with self._lock:
            self._files[kind].append(recording)
            self._files[kind].sort(key=lambda found: found.start)
        return recording

    def give_up(self, writer: Mp4Writer) -> None:
        """A file whose disk refused a write or its finish: let go as it is on disk, then ``discard``."""
        writer.abandon()
        self.discard(writer.path)

    def discard(self, part: Path) -> None:
        """A file given up on (its disk failed): kept as far as it plays, named and listed as
        start-up would, or removed; never raises (a disk that fails again leaves it to start-up)."""
        try:
            if not part.exists():
                return
            if part.parent.parent == self.folder / "continuous":
                found = self._loaded_segment(part.parent.name, part)
            else:
                found = self._loaded_timelapse(part)
        except OSError as exc:
            log.warning("cannot tidy %s now (%s); start-up will", part, exc)
            return
        if found is not None:
            with self._lock:
                self._files[found.kind].append(found)
                self._files[found.kind].sort(key=lambda recording: recording.start)

    # --- retention --------------------------------------------------------------------------------

    def prune(self, needed: int = 0) -> bool:
        """Apply the limits: continuous footage by age and bytes, timelapses by age, and the oldest
        continuous footage while the disk is below its floor (plus ``needed``); False when the
        disk stays below it with no footage left to remove."""
        now = self._wall()
        continuous, timelapse = self._settings.continuous, self._settings.timelapse
        with self._lock:
            victims = [r for r in self._files["continuous"] if r.start + r.seconds < now - continuous.keep_days * 86400]
            victims += [r for r in self._files["timelapse"] if r.start < now - timelapse.keep_days * 86400]
            kept = [r for r in self._files["continuous"] if r not in victims]
            total = sum(r.bytes for r in kept)
            while kept and total > continuous.max_bytes:
                oldest = kept.pop(0)
                total -= oldest.bytes
                victims.append(oldest)
        for recording in victims:
            self._remove(recording)
        return self.make_room(needed)

    def make_room(self, needed: int) -> bool:
        """Remove the oldest continuous footage while the disk has less than its floor plus ``needed``
        free; False when there is no footage left to remove and the disk is still short."""
        if self._min_free <= 0 and needed <= 0:
            return True
        while True:
            try:
                free = self._free_bytes(self.folder)
            except OSError as exc:
                log.warning("cannot read the free space of %s: %s", self.folder, exc)
                return False
            if free - needed >= self._min_free:
                return True
            with self._lock:
                oldest = self._files["continuous"][0] if self._files["continuous"] else None
            if oldest is None:
                return False
            self._remove(oldest)
            self.removed_for_space += 1

    def free_for_events(self, needed: int) -> None:
        """The history's hook: on the same disk, continuous footage gives way before any event."""
        if self._with_events:
            self.make_room(needed)

    def _remove(self, recording: Recording) -> None:
        with self._lock:
            kept = self._files[recording.kind]
            if recording in kept:
                kept.remove(recording)
        path = self.folder / recording.name
        try:
            path.unlink(missing_ok=True)
            if recording.kind == "continuous" and not any(path.parent.iterdir()):
                path.parent.rmdir()  # a day with nothing left
        except OSError as exc:
            log.warning("cannot remove %s: %s", recording.name, exc)

    # --- reading (any thread) ---------------------------------------------------------------------

    def files(self, kind: Kind, start: float | None = None, end: float | None = None) -> list[Recording]:
        """Files of ``kind`` that overlap ``[start, end)``, oldest first."""
        with self._lock:
            found = list(self._files[kind])
        return [r for r in found if (start is None or r.start + r.seconds > start) and (end is None or r.start < end)]

    def covering(self, moment: float) -> tuple[Recording, float] | None:
        """The continuous segment that holds wall time ``moment``, and how far into it that is
        (a search of the sorted catalogue: a page of events asks this for each)."""
        with self._lock:
            kept = self._files["continuous"]
            at = bisect.bisect_right(kept, moment, key=lambda recording: recording.start) - 1
            found = kept[at] if at >= 0 else None
        if found is not None and found.start <= moment < found.start + found.seconds:
            return found, moment - found.start
        return None

    def path_of(self, name: str) -> Path | None:
        """The file of a catalogued recording, by its name; None for any other name."""
        kind = name.partition("/")[0]
        if kind not in self._files:
            return None
        with self._lock:
            known = any(recording.name == name for recording in self._files[kind])  # type: ignore[index]
        return self.folder / name if known else None

    def summary(self) -> dict[str, Any]:
        with self._lock:
            continuous, timelapse = list(self._files["continuous"]), list(self._files["timelapse"])
            fault, since = self.fault, self.fault_since
        return {"folder": str(self.folder), "fault": fault, "fault_since": since,
                "continuous": {"files": len(continuous), "bytes": sum(r.bytes for r in continuous),
                               "oldest": continuous[0].start if continuous else None,
                               "newest_end": continuous[-1].start + continuous[-1].seconds if continuous else None},
                "timelapse": {"files": len(timelapse), "bytes": sum(r.bytes for r in timelapse)},
                "removed_for_space": self.removed_for_space}


def same_disk(first: Path, second: Path) -> bool:
    """Whether two folders are on one filesystem (then recordings give way to events there)."""
    with contextlib.suppress(OSError):
        return os.stat(first).st_dev == os.stat(second).st_dev
    return False
