"""One encoded JPEG, many viewers.

The capture thread publishes each encoded frame once and wakes the stream writer
(``appliance.web.fanout``), which hands the same bytes to every viewer that is due; a slow viewer simply
skips to the newest frame, so it never delays the others. Snapshots wait here, on one condition,
with a timeout, so none hangs when the camera stalls.

Each viewer may ask for fewer frames (``?fps=`` on the stream): its slot says when it next wants
one, and the capture thread encodes only while some viewer is due (or a snapshot is wanted), so a
dashboard thumbnail at 1 frame/s costs one encode a second, not thirty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

SAME = object()
"""``publish(jpeg)``: the stream's frame is also the full-size still."""


class TooManyViewers(Exception):
    """The configured viewer limit is reached."""


@dataclass(eq=False)
class ViewerSlot:
    """One viewer: the camera run it belongs to, how often it wants a frame, and from when."""

    generation: int
    interval: float = 0.0  # s between frames; 0: every frame
    due: float = 0.0  # monotonic time from which it wants its next frame


@dataclass(frozen=True)
class Current:
    """The camera run now live and its newest stream frame (``jpeg`` None before the first)."""

    generation: int
    seq: int
    jpeg: bytes | None
    taken: float | None = None  # time.time() at capture of that frame: X-Timestamp on its stream part


class FrameBroadcaster:
    """Hands the newest JPEG to any number of waiting viewers and tracks who wants frames."""

    def __init__(self, max_viewers: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._max_viewers = max_viewers
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None  # the stream's newest frame (scaled to stream.size)
        self._jpeg_at = 0.0
        self._taken: float | None = None
        self._seq = 0
        self._still: bytes | None = None  # the newest full-size frame, for snapshots
        self._still_seq = 0
        self._still_at = 0.0
        self._generation = 0
        self._live = False
        self._slots: set[ViewerSlot] = set()
        # Requests waiting for a picture: "still" (a full-size snapshot) or "frame" (a stream frame,
        # the page's snapshot mode); the capture thread encodes what is waited for.
        self._waiting = {"still": 0, "frame": 0}
        self._wakers: list[Callable[[], None]] = []
        self.published = 0

    def add_waker(self, waker: Callable[[], None]) -> None:
        """Call ``waker`` (quick, non-blocking) after every publish, start and stop: the stream writer."""
        self._wakers = [*self._wakers, waker]

    def remove_waker(self, waker: Callable[[], None]) -> None:
        self._wakers = [w for w in self._wakers if w != waker]

    def _wake_all(self) -> None:
        for waker in self._wakers:
            waker()

    # --- producer side -------------------------------------------------------------------------

    def start(self) -> None:
        """The camera is on: forget the previous run's frame, accept viewers."""
        with self._cond:
            self._generation += 1
            self._live = True
            self._jpeg = self._still = None
            self._cond.notify_all()
        self._wake_all()

    def stop(self) -> None:
        """The camera is off: every open stream ends at its next wake-up, which is now."""
        with self._cond:
            self._live = False
            self._jpeg = self._still = None
            self._cond.notify_all()
        self._wake_all()

    def publish(self, jpeg: bytes | None, still: bytes | object | None = SAME, taken: float | None = None) -> None:
        """Make ``jpeg`` the stream's newest frame and ``still`` the newest full-size one for snapshots
        (``SAME``: the stream is not scaled, ``jpeg`` is both; None: no new still); wake everyone.
        ``taken`` is the frame's capture time (wall clock), sent with it to viewers."""
        full = jpeg if still is SAME else cast("bytes | None", still)
        with self._cond:
            if jpeg is not None:
                self._seq += 1
                self._jpeg = jpeg
                self._taken = taken
                self._jpeg_at = self._monotonic()
                self.published += 1
            if full is not None:
                self._still_seq += 1
                self._still = full
                self._still_at = self._monotonic()
            self._cond.notify_all()
        if jpeg is not None:
            self._wake_all()

    def wants_frames(self) -> bool:
        """Whether a stream frame would be used now: some viewer is due. The capture thread encodes
        for the stream only then."""
        if self._waiting["frame"]:
            return True
        now = self._monotonic()
        return any(slot.due <= now for slot in list(self._slots))

    def wants_still(self) -> bool:
        """Whether a full-size frame is awaited (a snapshot)."""
        return self._waiting["still"] > 0

    def wait_for_demand(self, timeout: float) -> bool:
        """Block until someone wants frames (or ``timeout``); lets tests and tools sync without polling."""
        with self._cond:
            return self._cond.wait_for(lambda: self.wants_frames() or self.wants_still(), timeout)

    # --- consumer side -------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self._live

    @property
    def newest_seq(self) -> int:
        return self._seq

    def current(self) -> Current | None:
        """The live run and its newest frame, without waiting; None while the camera is off."""
        with self._cond:
            if not self._live:
                return None
            return Current(self._generation, self._seq, self._jpeg, self._taken)

    @property
    def viewers(self) -> int:
        return len(self._slots)

    @property
    def generation(self) -> int:
        return self._generation

    def add_viewer(self, max_fps: float | None = None) -> ViewerSlot:
        """Count a new viewer of the current camera run, wanting at most ``max_fps`` frames a second.

        Raises TooManyViewers at the limit and LookupError while the camera is off.
        """
        with self._cond:
            if not self._live:
                raise LookupError("camera is off")
            if len(self._slots) >= self._max_viewers:
                raise TooManyViewers(f"viewer limit of {self._max_viewers} reached")
            slot = ViewerSlot(self._generation, 1.0 / max_fps if max_fps else 0.0)
            self._slots.add(slot)
            self._cond.notify_all()
            return slot

    def remove_viewer(self, slot: ViewerSlot) -> None:
        with self._cond:
            self._slots.discard(slot)
            self._cond.notify_all()

    def sent(self, slot: ViewerSlot) -> None:
        """The viewer has its frame: it wants the next one ``interval`` from now."""
        slot.due = self._monotonic() + slot.interval

    def wait_for_viewers(self, count: int, timeout: float) -> bool:
        """Block until exactly ``count`` viewers remain (or ``timeout``): for shutdown and tests."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._slots) == count, timeout)

    def stream_snapshot(self, timeout: float, max_age: float) -> bytes | None:
        """A current stream frame (at ``stream.size``, as viewers see it): for pages that poll
        pictures instead of streaming. Costs an encode only when no stream frame is fresh."""
        return self._current_or_next(lambda: (self._jpeg, self._seq, self._jpeg_at), "frame", timeout, max_age)

    def snapshot(self, timeout: float, max_age: float) -> bytes | None:
        """A current JPEG: the newest if younger than ``max_age`` s, else the next one encoded.

        Returns None if the camera is off or no frame comes within ``timeout``.
        """
        return self._current_or_next(lambda: (self._still, self._still_seq, self._still_at), "still", timeout,
                                     max_age)

    def _current_or_next(self, newest: Callable[[], tuple[bytes | None, int, float]], waiters: str,
                         timeout: float, max_age: float) -> bytes | None:
        """``newest()`` (picture, sequence, when) if younger than ``max_age``, else the next one; while
        this waits, ``waiters`` ("still" or "frame") tells the capture thread that one is wanted."""
        with self._cond:
            if not self._live:
                return None
            jpeg, seq, taken_at = newest()
            if jpeg is not None and self._monotonic() - taken_at <= max_age:
                return jpeg
            generation = self._generation
            self._waiting[waiters] += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: not self._live or self._generation != generation
                                    or (newest()[1] > seq and newest()[0] is not None), timeout)
            finally:
                self._waiting[waiters] -= 1
            jpeg, latest, _ = newest()
            if not self._live or self._generation != generation or latest == seq:
                return None
            return jpeg
