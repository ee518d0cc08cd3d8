"""Fans state changes and saved motion events out to open pages (server-sent events).

Listeners of the controller run on the thread that caused the change, so they only put into
bounded per-client queues and never block; a page that stops reading loses its oldest messages,
not the appliance's time.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from typing import Any

from appliance.config import MotionSettings, PictureSettings
from appliance.motion.control import public
from appliance.state import StateChange


class TooManyClients(Exception):
    """The configured limit of live pages is reached."""


@dataclass(frozen=True)
class LiveMessage:
    """One server-sent event: ``kind`` is the SSE event name, ``data`` its JSON body."""

    kind: str
    data: dict[str, Any]


CLOSED = LiveMessage("closed", {})


class LiveFeed:
    """The set of open page connections, each with its own bounded queue."""

    def __init__(self, max_clients: int, queue_size: int = 64) -> None:
        self._max_clients = max_clients
        self._queue_size = queue_size
        self._lock = threading.Condition()
        self._clients: set[queue.Queue[LiveMessage]] = set()
        self._closed = False

    @property
    def clients(self) -> int:
        return len(self._clients)

    def subscribe(self) -> queue.Queue[LiveMessage]:
        with self._lock:
            if self._closed:
                raise TooManyClients("the appliance is shutting down")
            if len(self._clients) >= self._max_clients:
                raise TooManyClients(f"live page limit of {self._max_clients} reached")
            client: queue.Queue[LiveMessage] = queue.Queue(self._queue_size)
            self._clients.add(client)
            self._lock.notify_all()
            return client

    def unsubscribe(self, client: queue.Queue[LiveMessage]) -> None:
        with self._lock:
            self._clients.discard(client)
            self._lock.notify_all()

    def wait_for_clients(self, count: int, timeout: float) -> bool:
        """Block until exactly ``count`` pages follow the feed (or ``timeout``): for tests."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._clients) == count, timeout)

    def publish(self, message: LiveMessage) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            _put_dropping_oldest(client, message)

    def on_state(self, change: StateChange) -> None:
        self.publish(LiveMessage("state", change.as_dict()))

    def on_motion_settings(self, settings: MotionSettings) -> None:
        """Detection on/off, sensitivity or zones changed (on the page, over the API or from MQTT)."""
        self.publish(LiveMessage("motion_settings", public(settings)))

    def on_picture_settings(self, settings: PictureSettings, night_active: bool) -> None:
        """Controls, night mode or masks changed, or night mode switched by itself (auto)."""
        self.publish(LiveMessage("picture", {
            "controls": dict(settings.controls), "night_mode": settings.night_mode, "night_active": night_active,
            "masks": [mask.model_dump() for mask in settings.masks]}))

    def on_event_saved(self, kind: str, record: dict[str, Any]) -> None:
        self.publish(LiveMessage("motion", {"kind": kind, "event": record}))

    def close(self) -> None:
        """End every open stream (shutdown)."""
        with self._lock:
            self._closed = True
            clients = list(self._clients)
        for client in clients:
            _put_dropping_oldest(client, CLOSED)


def _put_dropping_oldest(client: queue.Queue[LiveMessage], message: LiveMessage) -> None:
    while True:
        try:
            client.put_nowait(message)
            return
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                client.get_nowait()
