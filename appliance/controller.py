"""The one owner of the camera's on/off state.

REST, MQTT and the GPIO button all call ``on``/``off``/``toggle`` here, and every change goes out
through one dispatcher to the registered listeners in order, whatever caused it. Commands are
serialised by one lock, held only while the switch moves (never while a camera starts), so ``off``
and shutdown are never stuck behind a camera that takes its time, and racing callers always leave
a consistent state. The wanted state (the switch position) is kept in a small file so the
appliance comes back as it was.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from appliance.capture.pipeline import CapturePipeline
from appliance.dispatch import Dispatcher, ObjectListener
from appliance.durable import durable_write
from appliance.motion.events import EventChange
from appliance.state import CameraState, MotionListener, StateChange, StateListener

if TYPE_CHECKING:
    from appliance.detection.objects import ObjectNews

log = logging.getLogger(__name__)

__all__ = ["CameraController", "CameraState", "StateChange", "StateFile"]

RestorePolicy = Literal["last", "on", "off"]


class StateFile:
    """The wanted on/off state on disk, written so that a power cut leaves the old or the new file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.problem: str | None = None  # why the last load or save failed, for /api/status

    def load(self) -> bool | None:
        """The saved switch position; None when there is none (first start) or it cannot be read."""
        if self.path is None or not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("on"), bool):
                raise ValueError(f"expected {{\"on\": true|false}}, found {str(data)[:60]!r}")
        except (OSError, ValueError) as exc:
            self.problem = f"state file {self.path} unreadable: {exc}"
            log.error("%s", self.problem)
            return None
        self.problem = None
        return data["on"]

    def save(self, on: bool) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            durable_write(self.path, json.dumps({"on": on, "saved_at": time.time()}).encode())
            self.problem = None
        except OSError as exc:  # a full or read-only disk must not stop the camera switching
            self.problem = f"cannot save state to {self.path}: {exc}"
            log.error("%s", self.problem)


class CameraController:
    """Switches the capture pipeline on and off and tells listeners about every change."""

    def __init__(self, pipeline: CapturePipeline, state_file: StateFile, start_timeout: float,
                 stop_timeout: float = 1.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, restore: RestorePolicy = "last") -> None:
        self._pipeline = pipeline
        self._state_file = state_file
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._monotonic = monotonic
        self._restore_policy = restore
        self._dispatcher = Dispatcher()
        self._command_lock = threading.Lock()
        self._cond = threading.Condition()
        self._state = CameraState.OFF
        self._wanted = False
        self._error: str | None = None
        self._changed_at = clock()
        self._start_deadline: float | None = None
        self._run_token = 0
        self._latest = StateChange(CameraState.OFF, CameraState.OFF, False, None, "start", self._changed_at)

    # --- listeners -----------------------------------------------------------------------------

    def add_listener(self, listener: StateListener) -> None:
        """Hear every state change, in order, on the dispatcher's thread."""
        self._dispatcher.add_state_listener(listener)

    def remove_listener(self, listener: StateListener) -> None:
        self._dispatcher.remove_state_listener(listener)

    def add_motion_listener(self, listener: MotionListener) -> None:
        """Hear motion event starts (with a JPEG) and ends, on the dispatcher's thread."""
        self._dispatcher.add_motion_listener(listener)

    def remove_motion_listener(self, listener: MotionListener) -> None:
        self._dispatcher.remove_motion_listener(listener)

    def add_object_listener(self, listener: ObjectListener) -> None:
        """Hear objects alerting, seen better and gone (``appliance.detection``), on the dispatcher's thread."""
        self._dispatcher.add_object_listener(listener)

    def objects_seen(self, news: ObjectNews) -> None:
        """The detector's news, delivered in order with the motion events it belongs to."""
        self._dispatcher.objects(news)

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until listeners have heard every change so far (tests, shutdown)."""
        return self._dispatcher.flush(timeout)

    def close(self) -> None:
        """Stop delivering news (after ``shutdown``); listeners hear what was already posted."""
        self._dispatcher.close()

    # --- queries -------------------------------------------------------------------------------

    @property
    def state(self) -> CameraState:
        self._check_start_deadline()
        return self._state

    @property
    def wanted_on(self) -> bool:
        return self._wanted

    @property
    def pipeline(self) -> CapturePipeline:
        return self._pipeline

    @property
    def state_file_problem(self) -> str | None:
        return self._state_file.problem

    def status(self) -> dict[str, Any]:
        self._check_start_deadline()
        with self._cond:
            return {"on": self._wanted, "state": self._state.value, "error": self._error,
                    "changed_at": self._changed_at}

    def latest_change(self) -> StateChange:
        """The newest state change (numbered by ``seq``): what a republish after a reconnect sends."""
        self._check_start_deadline()
        with self._cond:
            return self._latest

    def wait_for(self, predicate: Callable[[CameraState], bool], timeout: float) -> bool:
        """Block until ``predicate(state)`` holds or ``timeout`` passes."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._state), timeout)

    # --- commands ------------------------------------------------------------------------------

    def on(self, source: str = "api") -> dict[str, Any]:
        """Switch on; returns once frames flow, or the camera failed (``error``), or the start timed out
        (``timed_out``: the camera keeps trying). ``off`` from elsewhere ends the wait at once."""
        with self._command_lock:
            token = self._switch_on(source)
        return self._await_start(token)

    def off(self, source: str = "api") -> dict[str, Any]:
        """Switch off; returns once the capture thread has let go (or was left to, if it hangs)."""
        with self._command_lock:
            self._switch_off(source)
        return self.status()

    def toggle(self, source: str = "api") -> dict[str, Any]:
        """Flip the switch atomically: two racing toggles always end where they started."""
        with self._command_lock:
            token = None if self._wanted else self._switch_on(source)
            if token is None:
                self._switch_off(source)
        return self._await_start(token)

    def restore(self) -> dict[str, Any]:
        """Come back as ``camera.restore`` says, without waiting for the camera: called before any
        command source opens, so an early ``off`` is never undone. A state file that cannot be read
        counts as on: a security camera must not come back silently off."""
        saved = self._state_file.load()
        if self._restore_policy == "last":
            wanted = saved if saved is not None else self._state_file.problem is not None
        else:
            wanted = self._restore_policy == "on"
        if wanted:
            log.info("restoring camera state: on (%s)", "saved" if saved else self._state_file.problem
                     or f"camera.restore is {self._restore_policy}")
            with self._command_lock:
                self._switch_on("restore")
        return self.status()

    def shutdown(self) -> None:
        """Release the camera for process exit without changing the saved switch position."""
        with self._command_lock:
            if self._wanted:
                self._stop("shutdown")

    # --- internals -----------------------------------------------------------------------------

    def _switch_on(self, source: str) -> int | None:
        """Under the command lock: start the camera; the run's token, or None if it was already on."""
        if self._wanted:
            return None
        self._wanted = True
        self._state_file.save(True)
        token = self._begin_run()
        with self._cond:
            self._start_deadline = self._monotonic() + self._start_timeout
        self._set_state(CameraState.STARTING, None, source)
        self._pipeline.start(lambda state, error: self._pipeline_report(token, state, error, source),
                             lambda change, jpeg: self._motion_report(token, change, jpeg))
        return token

    def _switch_off(self, source: str) -> None:
        if self._wanted:
            self._wanted = False
            self._state_file.save(False)
            self._stop(source)

    def _await_start(self, token: int | None) -> dict[str, Any]:
        """Outside the command lock: wait for the run ``token`` to deliver frames, fail, or be replaced."""
        if token is None:
            return {**self.status(), "timed_out": False}
        with self._cond:
            settled = self._cond.wait_for(
                lambda: self._run_token != token or self._state in (CameraState.ON, CameraState.ERROR),
                self._start_timeout)
        self._check_start_deadline()
        return {**self.status(), "timed_out": not settled}

    def _check_start_deadline(self) -> None:
        """A start that produced no frame in time is an error (the capture thread keeps trying)."""
        with self._cond:
            deadline = self._start_deadline
            if deadline is None or self._state != CameraState.STARTING or self._monotonic() < deadline:
                return
            self._start_deadline = None
            self._set_state(CameraState.ERROR, f"the camera did not deliver a frame within "
                                               f"{self._start_timeout:.0f} s; still trying", "camera")

    def _begin_run(self) -> int:
        with self._cond:
            self._run_token += 1
            self._cond.notify_all()  # waiters of the previous run stop waiting
            return self._run_token

    def _stop(self, source: str) -> None:
        self._begin_run()  # reports from the stopping run are stale from here on
        self._set_state(CameraState.STOPPING, None, source)
        if not self._pipeline.stop(self._stop_timeout):
            log.error("capture thread did not stop within %.1f s; it is left to finish on its own",
                      self._stop_timeout)
        self._set_state(CameraState.OFF, None, source)

    def _pipeline_report(self, token: int, state: str, error: str | None, source: str) -> None:
        with self._cond:
            if token != self._run_token:
                return
            new = CameraState.ON if state == "on" else CameraState.ERROR
            cause = source if self._state == CameraState.STARTING else "camera"
            if new == CameraState.ON:
                self._start_deadline = None
            self._set_state(new, error, cause)

    def _motion_report(self, token: int, change: EventChange, jpeg: bytes | None) -> None:
        if token != self._run_token and change.kind == "start":
            return
        self._dispatcher.motion(change, jpeg)

    def _set_state(self, state: CameraState, error: str | None, source: str) -> None:
        with self._cond:
            previous = self._state
            if previous == state and self._error == error:
                return
            self._state, self._error = state, error
            self._changed_at = self._clock()
            change = StateChange(state, previous, self._wanted, error, source, self._changed_at,
                                 self._latest.seq + 1)
            self._latest = change
            log.info("camera %s -> %s (%s)%s", previous.value, state.value, source,
                     f": {error}" if error else "")
            self._dispatcher.state_changed(change)  # posted under the lock: listeners hear changes in order
            self._cond.notify_all()
