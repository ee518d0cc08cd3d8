"""The one owner of the camera's on/off state.

REST, MQTT and the GPIO button all call ``on``/``off``/``toggle`` here, and every change goes out to
the registered listeners in order, whatever caused it. Commands are serialised by one lock so racing
callers always leave a consistent state with the device opened and closed in balance. The wanted
state (the switch position) is kept in a small file so the appliance comes back as it was.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.motion import EventChange
from appliance.pipeline import CapturePipeline

log = logging.getLogger(__name__)


class CameraState(enum.StrEnum):
    """Where the camera is: ``error`` means wanted on but failing, and retrying."""

    OFF = "off"
    STARTING = "starting"
    ON = "on"
    STOPPING = "stopping"
    ERROR = "error"


@dataclass(frozen=True)
class StateChange:
    """One transition, as listeners hear it."""

    state: CameraState
    previous: CameraState
    wanted_on: bool
    error: str | None
    source: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "previous": self.previous.value, "on": self.wanted_on,
                "error": self.error, "source": self.source, "at": self.at}


StateListener = Callable[[StateChange], None]
MotionListener = Callable[[EventChange, "bytes | None"], None]


class StateFile:
    """The wanted on/off state on disk, written atomically so a power cut never leaves half a file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> bool:
        if self.path is None or not self.path.exists():
            return False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return bool(data["on"]) if isinstance(data, dict) else False
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable state file %s: %s", self.path, exc)
            return False

    def save(self, on: bool) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"on": on, "saved_at": time.time()}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # a full or read-only disk must not stop the camera switching
            log.error("cannot save state to %s: %s", self.path, exc)


class CameraController:
    """Switches the capture pipeline on and off and tells listeners about every change."""

    def __init__(self, pipeline: CapturePipeline, state_file: StateFile, start_timeout: float,
                 stop_timeout: float = 3.0, clock: Callable[[], float] = time.time) -> None:
        self._pipeline = pipeline
        self._state_file = state_file
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._command_lock = threading.RLock()  # toggle() calls on()/off() inside it
        self._cond = threading.Condition()
        self._state = CameraState.OFF
        self._wanted = False
        self._error: str | None = None
        self._changed_at = clock()
        self._listeners: list[StateListener] = []
        self._motion_listeners: list[MotionListener] = []
        self._run_token = 0

    # --- listeners -----------------------------------------------------------------------------

    def add_listener(self, listener: StateListener) -> None:
        """Hear every state change; called in order, from the thread that caused it: do not block."""
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_motion_listener(self, listener: MotionListener) -> None:
        """Hear motion event starts (with a JPEG) and ends, from the capture thread: do not block."""
        self._motion_listeners.append(listener)

    def remove_motion_listener(self, listener: MotionListener) -> None:
        if listener in self._motion_listeners:
            self._motion_listeners.remove(listener)

    # --- queries -------------------------------------------------------------------------------

    @property
    def state(self) -> CameraState:
        return self._state

    @property
    def wanted_on(self) -> bool:
        return self._wanted

    @property
    def pipeline(self) -> CapturePipeline:
        return self._pipeline

    def status(self) -> dict[str, Any]:
        with self._cond:
            return {"on": self._wanted, "state": self._state.value, "error": self._error,
                    "changed_at": self._changed_at}

    def wait_for(self, predicate: Callable[[CameraState], bool], timeout: float) -> bool:
        """Block until ``predicate(state)`` holds or ``timeout`` passes."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._state), timeout)

    # --- commands ------------------------------------------------------------------------------

    def on(self, source: str = "api") -> dict[str, Any]:
        """Switch on; returns once frames flow, or the camera failed (state ``error``), or timed out."""
        with self._command_lock:
            if not self._wanted:
                self._wanted = True
                self._state_file.save(True)
                token = self._begin_run()
                self._set_state(CameraState.STARTING, None, source)
                self._pipeline.start(lambda state, error: self._pipeline_report(token, state, error, source),
                                     lambda change, jpeg: self._motion_report(token, change, jpeg))
                self.wait_for(lambda s: s in (CameraState.ON, CameraState.ERROR), self._start_timeout)
            return self.status()

    def off(self, source: str = "api") -> dict[str, Any]:
        """Switch off; returns once the camera is released."""
        with self._command_lock:
            if self._wanted:
                self._wanted = False
                self._state_file.save(False)
                self._stop(source)
            return self.status()

    def toggle(self, source: str = "api") -> dict[str, Any]:
        """Flip the switch atomically: two racing toggles always end where they started."""
        with self._command_lock:
            return self.off(source) if self._wanted else self.on(source)

    def restore(self) -> dict[str, Any]:
        """Come back as before the restart: on if the state file says so (first start: off)."""
        if self._state_file.load():
            log.info("restoring camera state: on")
            return self.on(source="restore")
        return self.status()

    def shutdown(self) -> None:
        """Release the camera for process exit without changing the saved switch position."""
        with self._command_lock:
            if self._wanted:
                self._stop("shutdown")

    # --- internals -----------------------------------------------------------------------------

    def _begin_run(self) -> int:
        with self._cond:
            self._run_token += 1
            return self._run_token

    def _stop(self, source: str) -> None:
        self._begin_run()  # reports from the stopping run are stale from here on
        self._set_state(CameraState.STOPPING, None, source)
        if not self._pipeline.stop(self._stop_timeout):
            log.error("capture thread did not stop within %.1f s", self._stop_timeout)
        self._set_state(CameraState.OFF, None, source)

    def _pipeline_report(self, token: int, state: str, error: str | None, source: str) -> None:
        with self._cond:
            if token != self._run_token:
                return
            new = CameraState.ON if state == "on" else CameraState.ERROR
            cause = source if self._state == CameraState.STARTING else "camera"
            self._set_state(new, error, cause)

    def _motion_report(self, token: int, change: EventChange, jpeg: bytes | None) -> None:
        if token != self._run_token and change.kind == "start":
            return
        for listener in list(self._motion_listeners):
            try:
                listener(change, jpeg)
            except Exception:
                log.exception("motion listener %r failed", listener)

    def _set_state(self, state: CameraState, error: str | None, source: str) -> None:
        with self._cond:
            previous = self._state
            if previous == state and self._error == error:
                return
            self._state, self._error = state, error
            self._changed_at = self._clock()
            change = StateChange(state, previous, self._wanted, error, source, self._changed_at)
            log.info("camera %s -> %s (%s)%s", previous.value, state.value, source,
                     f": {error}" if error else "")
            # Listeners run under the condition so every listener hears changes in the same order.
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:
                    log.exception("state listener %r failed", listener)
            self._cond.notify_all()
