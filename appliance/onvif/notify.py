"""Motion pushed to ONVIF clients that ``Subscribe`` (WS-BaseNotification): Home Assistant's webhook.

A client gives the address to post notifications to. It must be on the host that subscribed: its
host must be the subscriber's address, or a name that resolves to it, and every notification is
sent to that address itself (never looked up again), so the camera cannot be told to post to any
other machine on the LAN, nor re-pointed at one by DNS. Subscriptions are bounded
(``max_subscriptions``) and end at their termination time unless renewed, like pull points.

One thread (``onvif-notify``) posts, from a bounded queue: a notification that finds it full is
dropped and counted, never waited for; each post has ``TIMEOUT`` seconds. The motion listener (the
dispatcher's thread) only queues.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from appliance.motion.events import EventChange
from appliance.onvif.events import Notification, ends_at, message_xml
from appliance.onvif.soap import envelope

log = logging.getLogger(__name__)

QUEUE = 64
TIMEOUT = 5.0  # s for one post
NOTIFY_ACTION = "http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify"


class RefusedConsumer(Exception):
    """The consumer's address is not one we post to; the message says why."""


@dataclass(eq=False)
class Push:
    id: str
    url: str  # as the client gave it (its Host header and path)
    address: str  # the subscriber's IP: where every post goes
    port: int
    ends_at: float
    sent: int = 0
    failed: int = 0


def consumer_of(url: str, subscriber: str) -> tuple[str, int]:
    """(the address to post to, its port) for a consumer URL given by ``subscriber``; raises
    ``RefusedConsumer`` unless the URL's host is the subscriber."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise RefusedConsumer("the consumer must be an http:// address")
    host = parts.hostname
    try:
        port = parts.port or 80
    except ValueError:
        raise RefusedConsumer("the consumer's port is not a number") from None
    try:
        literal = ipaddress.ip_address(host)
        addresses = {str(literal)}
    except ValueError:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
        except OSError:
            raise RefusedConsumer(f"the consumer's host {host[:64]!r} does not resolve") from None
    if subscriber not in addresses:
        raise RefusedConsumer("notifications go only to the host that subscribes")
    return subscriber, port


class Notifier:
    """The Subscribe subscriptions and the thread that posts to them."""

    def __init__(self, max_subscriptions: int, motion_now: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.max_subscriptions = max_subscriptions
        self._motion_now = motion_now
        self._clock = clock
        self._lock = threading.Lock()
        self._pushes: dict[str, Push] = {}
        self._queue: queue.Queue[tuple[Push, Notification] | None] = queue.Queue(QUEUE)
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.refused = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="onvif-notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop posting; a post under way is left to its timeout (a daemon)."""
        with contextlib.suppress(queue.Full):
            while True:  # make room for the end, dropping what waits
                try:
                    self._queue.put_nowait(None)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- subscriptions (server threads) ----------------------------------------------------------

    def subscribe(self, url: str, subscriber: str, termination: str | None) -> Push:
        address, port = consumer_of(url, subscriber)
        now = self._clock()
        with self._lock:
            self._expire(now)
            if len(self._pushes) >= self.max_subscriptions:
                self.refused += 1
                raise RefusedConsumer(f"at most {self.max_subscriptions} notification subscriptions at once")
            push = Push(secrets.token_hex(8), url, address, port, ends_at(termination, now))
            self._pushes[push.id] = push
        return push

    def renew(self, key: str, termination: str | None) -> float | None:
        """The new end time, or None when the subscription has ended."""
        now = self._clock()
        with self._lock:
            push = self._pushes.get(key)
            if push is None or push.ends_at <= now:
                return None
            push.ends_at = ends_at(termination, now)
            return push.ends_at

    def unsubscribe(self, key: str) -> bool:
        with self._lock:
            return self._pushes.pop(key, None) is not None

    def synchronize(self, key: str) -> bool:
        """The current state is posted to this subscription."""
        with self._lock:
            push = self._pushes.get(key)
        if push is None:
            return False
        self._enqueue(push, Notification(self._clock(), self._motion_now(), "Initialized"))
        return True

    def _expire(self, now: float) -> None:
        for key in [key for key, push in self._pushes.items() if push.ends_at <= now]:
            del self._pushes[key]

    @property
    def subscriptions(self) -> int:
        with self._lock:
            return len(self._pushes)

    # --- motion (the dispatcher's thread) --------------------------------------------------------

    def on_motion(self, change: EventChange, _jpeg: bytes | None) -> None:
        note = Notification(self._clock(), change.kind == "start", "Changed")
        with self._lock:
            self._expire(note.at)
            pushes = list(self._pushes.values())
        for push in pushes:
            self._enqueue(push, note)

    def _enqueue(self, push: Push, note: Notification) -> None:
        try:
            self._queue.put_nowait((push, note))
        except queue.Full:
            self.dropped += 1

    # --- the posting thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            push, note = item
            try:
                self._post(push, note)
                push.sent += 1
            except (OSError, http.client.HTTPException) as exc:
                push.failed += 1
                log.info("ONVIF: a notification to %s failed: %s", push.address, exc)

    def _post(self, push: Push, note: Notification) -> None:
        from appliance.onvif.media import SOURCE_CONFIG  # the one video source configuration

        body = envelope(f"<wsnt:Notify>{message_xml(note, SOURCE_CONFIG)}</wsnt:Notify>")
        parts = urlsplit(push.url)
        connection = http.client.HTTPConnection(push.address, push.port, timeout=TIMEOUT)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            kind = f'application/soap+xml; charset=utf-8; action="{NOTIFY_ACTION}"'
            connection.request("POST", target, body=body, headers={"Host": parts.netloc, "Content-Type": kind})
            response = connection.getresponse()
            response.read(65536)
            if response.status >= 400:
                raise http.client.HTTPException(f"HTTP {response.status}")
        finally:
            connection.close()
