"""One way to deliver news: state changes, motion events and objects reach every listener on one thread.

The controller and the capture thread only *post* news; a single delivery thread calls the
listeners in the order the news was posted, outside every lock. So a listener may take its time
(within reason) without stalling the camera, and a listener that calls the controller back (an
automation that switches the camera off on motion) cannot deadlock.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.state import MotionListener, StateChange, StateListener

if TYPE_CHECKING:
    from appliance.detection.objects import ObjectNews
    from appliance.motion.events import EventChange

ObjectListener = Callable[["ObjectNews"], None]

log = logging.getLogger(__name__)


class Dispatcher:
    """Listener lists and the delivery thread; ``close()`` delivers what is queued, then joins."""

    def __init__(self, name: str = "dispatcher") -> None:
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, Any, Any]] = deque()
        self._state_listeners: list[StateListener] = []
        self._motion_listeners: list[MotionListener] = []
        self._object_listeners: list[ObjectListener] = []
        self._delivering = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- listeners ---------------------------------------------------------------------------------

    def add_state_listener(self, listener: StateListener) -> None:
        with self._cond:
            self._state_listeners.append(listener)

    def remove_state_listener(self, listener: StateListener) -> None:
        with self._cond:
            if listener in self._state_listeners:
                self._state_listeners.remove(listener)

    def add_motion_listener(self, listener: MotionListener) -> None:
        with self._cond:
            self._motion_listeners.append(listener)

    def remove_motion_listener(self, listener: MotionListener) -> None:
        with self._cond:
            if listener in self._motion_listeners:
                self._motion_listeners.remove(listener)

    def add_object_listener(self, listener: ObjectListener) -> None:
        with self._cond:
            self._object_listeners.append(listener)

    # --- news --------------------------------------------------------------------------------------

    def state_changed(self, change: StateChange) -> None:
        self._post("state", change, None)

    def motion(self, change: EventChange, jpeg: bytes | None) -> None:
        self._post("motion", change, jpeg)

    def objects(self, news: ObjectNews) -> None:
        self._post("objects", news, None)

    def _post(self, kind: str, news: Any, extra: Any) -> None:
        with self._cond:
            if self._closed:
                return
            self._queue.append((kind, news, extra))
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Block until everything posted so far has been delivered."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._delivering, timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Deliver what is queued (within ``timeout``), then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("a listener is still busy after %.1f s; leaving it", timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._delivering = False
                self._cond.notify_all()
                while not self._queue:
                    if self._closed:
                        return
                    self._cond.wait()
                kind, news, extra = self._queue.popleft()
                listeners: list[Any] = list(self._state_listeners if kind == "state" else self._motion_listeners
                                            if kind == "motion" else self._object_listeners)
                self._delivering = True
            for listener in listeners:  # outside the lock: a listener may call back into anything
                try:
                    listener(news, extra) if kind == "motion" else listener(news)
                except Exception:
                    log.exception("%s listener %r failed", kind, listener)
