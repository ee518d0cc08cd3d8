"""One target's sender: its own thread, a bounded queue, a cooldown, a timeout per send, retries.

Each target has its own thread, so a service that never answers holds up only its own messages: the
others go out as if it were not there, and nothing the capture thread, the page or MQTT does waits on
any of them (``submit`` appends to a deque and returns). The queue holds ``notify.queue`` messages;
a backlog drops the oldest, counted. A send is bounded by ``notify.timeout`` (Apprise abandons a
service that overruns it) and retried ``notify.retries`` times after a failure, ``retry_delay``
doubling each time, waiting on the stop event rather than sleeping.

The cooldown: after a message has gone, the events of the next ``cooldown`` seconds are not sent
each on its own; they are counted, and the first message after the cooldown says how many there were
("and 12 more since 14:02"), so a windy afternoon sends a handful of messages, not hundreds. Messages
that are not about events (a test, the camera's faults) pass the cooldown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from appliance.config import NotifySettings, NotifyTarget
from appliance.notify.secrets import Redactor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """What one target is told: its title and body already made from its templates."""

    kind: str  # start, end, fault, back, test
    title: str
    body: str
    jpeg: bytes | None = None
    at: float = 0.0  # time.time() of what it is about
    cooled: bool = True  # counts against (and is held by) the cooldown


Send = Callable[[Message], tuple[bool, str | None]]
"""Delivers one message: (delivered, why not). Must return within the settings' timeout."""


def apprise_send(url: str, timeout: float, redact: Redactor) -> Send:
    """A sender through Apprise for one URL (checked now: an URL Apprise cannot use is a config error)."""
    import apprise
    from apprise.attachment.memory import AttachMemory

    service = apprise.Apprise()
    if not service.add(url):
        raise ValueError("Apprise knows no service for this URL (see https://github.com/caronc/apprise/wiki)")

    def send(message: Message) -> tuple[bool, str | None]:
        attach = None
        if message.jpeg is not None:
            attach = apprise.AppriseAttachment()
            attach.add(AttachMemory(content=message.jpeg, name="snapshot.jpg", mimetype="image/jpeg"))
        result = service.notify(body=message.body, title=message.title, attach=attach, timeout=timeout)
        status = getattr(result, "status", None)
        if bool(result) and getattr(status, "name", "SUCCESS") == "SUCCESS":
            return True, None
        said = [str(entry.message) for entry in getattr(result, "logs", list)()]
        reason = getattr(status, "name", "FAILURE").lower()
        return False, redact(f"{reason}: {said[-1]}" if said else reason)

    return send


class TargetSender:
    """Owns one target's thread (``start``/``stop``) and its queue; ``submit`` never blocks."""

    def __init__(self, target: NotifyTarget, settings: NotifySettings, send: Send,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 redact: Callable[[str], str] = str) -> None:
        self.target = target
        self._redact = redact
        self._settings = settings
        self._send = send
        self._clock = clock
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._queue: deque[Message] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cooling_until = 0.0  # monotonic
        self._held = 0  # events counted during the cooldown, summed up in the next message
        self._held_since: float | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.held_total = 0
        self.last: dict[str, Any] | None = None  # the last send's result
        self.result_listeners: list[Callable[[str, dict[str, Any]], None]] = []  # told (name, last) after each send

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"notify-{self.target.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("notification target %s is still sending; leaving it", self.target.name)

    def submit(self, message: Message) -> None:
        """Queue ``message`` (the oldest goes when the queue is full); held instead while cooling down."""
        with self._cond:
            if message.cooled and self._monotonic() < self._cooling_until:
                self._held += 1
                self.held_total += 1
                self._held_since = self._held_since or message.at
                return
            if message.cooled:
                self._cooling_until = self._monotonic() + self.target.cooldown
                if self._held:
                    since = datetime.fromtimestamp(self._held_since or message.at).strftime("%H:%M")
                    message = replace(message, body=f"{message.body}\n(and {self._held} more since {since})")
                    self._held, self._held_since = 0, None
            if len(self._queue) >= self._settings.queue:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(message)
            self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        with self._cond:
            queued = len(self._queue)
        return {"name": self.target.name, "events": list(self.target.events), "queued": queued, "sent": self.sent,
                "failed": self.failed, "dropped": self.dropped, "held": self.held_total, "last": self.last}

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._stop.is_set())
                if self._stop.is_set():
                    return
                message = self._queue.popleft()
            self._deliver(message)

    def _deliver(self, message: Message) -> None:
        delay = self._settings.retry_delay
        for attempt in range(self._settings.retries + 1):
            try:
                delivered, reason = self._send(message)
            except Exception as exc:  # a plugin's bug must not end the thread
                delivered, reason = False, self._redact(f"{type(exc).__name__}: {exc}")
            if delivered:
                self.sent += 1
                self.last = {"ok": True, "kind": message.kind, "at": self._clock(), "attempts": attempt + 1,
                             "error": None}
                self._tell()
                return
            self.last = {"ok": False, "kind": message.kind, "at": self._clock(), "attempts": attempt + 1,
                         "error": reason}
            log.warning("notification to %s failed (try %d of %d): %s", self.target.name, attempt + 1,
                        self._settings.retries + 1, reason)
            if attempt == self._settings.retries or self._stop.wait(delay):
                break
            delay *= 2
        self.failed += 1
        self._tell()

    def _tell(self) -> None:
        for listener in self.result_listeners:
            try:
                listener(self.target.name, dict(self.last or {}))
            except Exception:
                log.exception("a notification result listener failed")
