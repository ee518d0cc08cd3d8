"""Commands from MQTT, coalesced so that no client can queue work without bound.

Anyone on the broker can publish ten thousand ``TOGGLE``s; each would save the state file and
restart the camera. The mailbox keeps only what is still wanted: one camera target (the last
command wins; ``TOGGLE`` flips the target that is pending, or the switch when none is), one pending
snapshot and one pending republish. One worker thread carries them out, the camera at most once per
``camera_interval`` and snapshots at most once per ``snapshot_interval``, so a flood ends in the
state of its last command after a handful of camera starts, and the memory it holds is constant.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class CommandMailbox:
    """The pending MQTT work and the thread that does it; ``close()`` stops and joins it."""

    def __init__(self, switch: Callable[[bool], object], wanted_on: Callable[[], bool],
                 snapshot: Callable[[], object], republish: Callable[[], object],
                 camera_interval: float = 1.0, snapshot_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._switch = switch
        self._wanted_on = wanted_on
        self._snapshot = snapshot
        self._republish = republish
        self._camera_interval = camera_interval
        self._snapshot_interval = snapshot_interval
        self._clock = clock
        self._cond = threading.Condition()
        self._target: bool | None = None
        self._snapshot_wanted = False
        self._republish_wanted = False
        self._camera_free_at = float("-inf")
        self._snapshot_free_at = float("-inf")
        self._busy = False
        self._stop = False
        self.camera_switches = 0  # how many commands reached the controller
        self._thread = threading.Thread(target=self._run, name="mqtt-commands", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- producers (paho's network thread) -------------------------------------------------------

    def camera(self, command: str) -> None:
        """``ON``, ``OFF`` or ``TOGGLE`` (already validated)."""
        with self._cond:
            if command == "TOGGLE":
                current = self._target if self._target is not None else self._wanted_on()
                self._target = not current
            else:
                self._target = command == "ON"
            self._cond.notify_all()

    def snapshot(self) -> None:
        with self._cond:
            self._snapshot_wanted = True
            self._cond.notify_all()

    def republish(self) -> None:
        with self._cond:
            self._republish_wanted = True
            self._cond.notify_all()

    # --- the worker ------------------------------------------------------------------------------

    def _next_job(self) -> tuple[Callable[[], object] | None, float | None]:
        """The job that may run now, or how long until one may (None: nothing pending). Under the lock."""
        now = self._clock()
        waits = []
        if self._republish_wanted:
            self._republish_wanted = False
            return self._republish, None
        if self._target is not None:
            if now >= self._camera_free_at:
                target, self._target = self._target, None
                self._camera_free_at = now + self._camera_interval
                return lambda: self._apply(target), None
            waits.append(self._camera_free_at - now)
        if self._snapshot_wanted:
            if now >= self._snapshot_free_at:
                self._snapshot_wanted = False
                self._snapshot_free_at = now + self._snapshot_interval
                return self._snapshot, None
            waits.append(self._snapshot_free_at - now)
        return None, min(waits) if waits else None

    def _apply(self, target: bool) -> None:
        if target != self._wanted_on():
            self.camera_switches += 1
        self._switch(target)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                while True:
                    if self._stop:
                        return
                    job, wait = self._next_job()
                    if job is not None:
                        break
                    self._cond.wait(wait)
                self._busy = True
            try:
                job()
            except Exception:
                log.exception("MQTT: command failed")

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending or running (tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy and self._target is None
                                       and not self._snapshot_wanted and not self._republish_wanted, timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Drop what is pending, stop the worker; False if it is still busy after ``timeout``."""
        with self._cond:
            self._stop = True
            self._target = None
            self._snapshot_wanted = self._republish_wanted = False
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("MQTT: a command was still running after %.1f s; not waiting for it", timeout)
            return False
        return True
