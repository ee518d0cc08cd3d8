"""The armed state: the schedule's word, unless a person said otherwise since its last change.

Every way in (the page, ``PUT /api/arming``, MQTT's *Armed* switch, the button's long press) calls
``set``; a manual choice holds until the schedule next changes ("disarmed until 22:00"), or for good
when there is no schedule. The choice is kept in ``arming.json`` (durably), so a power cut does not
arm a camera someone disarmed, and the state is worked out afresh from the clock at every question:
there is no timer to miss, and a clock set by the tests is obeyed at once. Listeners hear each change
(MQTT publishes it, the page shows it); the schedule's own changes are noticed by ``poll``, which the
notifier calls at every event and the status calls, and by a waiter that sleeps until the next one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.arming.schedule import WeeklySchedule
from appliance.durable import durable_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArmedState:
    """Whether armed now, and why: ``schedule``, ``manual`` (no schedule), or ``manual until HH:MM``."""

    armed: bool
    reason: str
    until: float | None  # when the schedule next changes it (epoch s), None when nothing will

    def public(self) -> dict[str, Any]:
        return {"armed": self.armed, "reason": self.reason, "until": self.until}


class ArmControl:
    """Owns the manual choice and answers what the state is now (``state()``), by the injected clock."""

    def __init__(self, schedule: WeeklySchedule, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.schedule = schedule
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._manual: tuple[bool, float | None] | None = None  # (armed, until) chosen by hand
        self._listeners: list[Callable[[ArmedState], None]] = []
        self._told: ArmedState | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                if not isinstance(data, dict) or not isinstance(data.get("armed"), bool):
                    raise ValueError("expected {\"armed\": true|false, \"until\": ...}")
                until = data.get("until")
                self._manual = (data["armed"], float(until) if isinstance(until, int | float) else None)
            except (OSError, ValueError) as exc:
                log.warning("ignoring the saved arming in %s: %s", path, exc)

    def add_listener(self, listener: Callable[[ArmedState], None]) -> None:
        self._listeners = [*self._listeners, listener]

    def start(self) -> None:
        """A thread (``arming``) that wakes at each of the schedule's changes, so listeners hear them."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="arming", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _watch(self) -> None:
        while not self._stop.is_set():
            until = self.poll().until
            # Asleep until the next change (a minute at most: a clock stepped by NTP is caught up with).
            wait = 60.0 if until is None else min(60.0, max(0.5, until - self._clock()))
            self._stop.wait(wait)

    def state(self) -> ArmedState:
        """The state now: the manual choice while it holds, else the schedule's (armed without one)."""
        now = self._clock()
        with self._lock:
            manual = self._manual
            if manual is not None and manual[1] is not None and now >= manual[1]:
                manual = self._manual = None  # the schedule changed since: its word again
        change = self.schedule.next_change(now) if self.schedule else None
        if manual is not None:
            armed, until = manual
            reason = f"manual until {self.schedule.local(until):%a %H:%M}" if until is not None else "manual"
            return ArmedState(armed, reason, until)
        if not self.schedule:
            return ArmedState(True, "no schedule", None)
        return ArmedState(self.schedule.armed(now), "schedule", change)

    def set(self, armed: bool, source: str = "api") -> ArmedState:
        """Arm or disarm by hand until the schedule's next change; kept across restarts."""
        if not isinstance(armed, bool):
            raise ValueError(f"'armed' must be true or false, not {armed!r}")
        now = self._clock()
        until = self.schedule.next_change(now) if self.schedule else None
        with self._lock:
            if self._path is not None:
                durable_write(self._path, json.dumps({"armed": armed, "until": until, "source": source}).encode())
            self._manual = (armed, until)
        log.info("%s by %s", "armed" if armed else "disarmed", source)
        return self.poll()

    def poll(self) -> ArmedState:
        """The state now; listeners hear it when it differs from what they last heard."""
        state = self.state()
        if self._told is None or (state.armed, state.reason) != (self._told.armed, self._told.reason):
            self._told = state
            for listener in self._listeners:
                try:
                    listener(state)
                except Exception:
                    log.exception("an arming listener failed")
        return state
