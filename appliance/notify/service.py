"""What is told, to whom and when: events become messages, handed to each target's sender.

``Notifier`` hears the dispatcher (motion events, objects, camera state) on its thread and only
builds messages and queues them; sending is the senders' work. A motion event's start goes, with its
snapshot, to the targets that want ``start`` and name no labels; with object detection, a target that
names labels hears instead when an object of one of them alerts, with that object's picture, once per
event and label. ``end`` follows, with the clip's link, to those told of the start. Events notify only
while armed (``appliance.arming``); the camera's faults (``fault``) and its recovery (``back``) are
told whatever the arming, since they are about the device. Every message carries the page's address,
built on ``server.public_url`` when set (a phone off the home network), and none of its links works
without the login when one is configured.
"""

from __future__ import annotations

import logging
import string
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from appliance.arming.control import ArmControl
from appliance.config import AppConfig, NotifyTarget
from appliance.motion.events import EventChange
from appliance.notify.secrets import Redactor
from appliance.notify.sender import Message, TargetSender
from appliance.state import CameraState, StateChange

if TYPE_CHECKING:
    from appliance.detection.objects import ObjectNews

log = logging.getLogger(__name__)
STOP_BUDGET = 1.0  # s for all senders together; a send in flight is abandoned (its thread a daemon)


class _Fields(dict[str, str]):
    """Template fields; an unknown ``{name}`` stays as written rather than failing the message."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(template: str, fields: Mapping[str, str]) -> str:
    try:
        return string.Formatter().vformat(template, (), _Fields(fields))
    except (ValueError, IndexError):  # a stray brace: the template as written, rather than nothing
        return template


class Notifier:
    """Owns the senders (``start``/``stop``) and turns news into their messages."""

    def __init__(self, config: AppConfig, arming: ArmControl, senders: list[TargetSender], redactor: Redactor,
                 page_url: Callable[[], str], clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self.arming = arming
        self.senders = senders
        self._redactor = redactor
        self._page_url = page_url
        self._clock = clock
        self._told: dict[str, set[str]] = {}  # event id -> targets told of its start
        self._camera_failed = False

    def add_result_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Hear each send's result (target name, ``ok``, ``kind``, ``at``, ``attempts``, ``error``)."""
        for sender in self.senders:
            sender.result_listeners.append(listener)

    def start(self) -> None:
        self._redactor.install()  # (already, since the URLs were read: it stays until stop)
        for sender in self.senders:
            sender.start()

    def stop(self) -> None:
        deadline = time.monotonic() + STOP_BUDGET
        for sender in self.senders:
            sender.stop(max(0.05, deadline - time.monotonic()))
        self._redactor.uninstall()

    # --- news (the dispatcher's thread) ---------------------------------------------------------------

    def on_motion(self, change: EventChange, jpeg: bytes | None) -> None:
        event = change.event
        if change.kind == "start":
            if not self.arming.poll().armed:
                return
            told = self._told_of(event.id)
            for sender in self._wanting("start", labelled=False):
                sender.submit(self._message(sender.target, "start", "Motion", event.started_at, event.id, jpeg))
                told.add(sender.target.name)
            return
        told = self._told.pop(event.id, set())
        for sender in self._wanting("end", labelled=None):
            if sender.target.name in told:  # only those told of its start (or of an object in it)
                sender.submit(self._message(sender.target, "end", "Motion ended", event.ended_at or self._clock(),
                                            event.id, None, cooled=False))

    def on_objects(self, news: ObjectNews) -> None:
        if news.kind != "alert" or not self.arming.poll().armed:
            return
        told = self._told_of(news.event_id or "")
        for sender in self._wanting("start", labelled=True):
            key = f"{sender.target.name}:{news.label}"
            if news.label not in sender.target.labels or key in told:
                continue
            told.add(key)
            told.add(sender.target.name)
            sender.submit(self._message(sender.target, "start", news.label.capitalize(), news.at, news.event_id,
                                        news.jpeg))

    def on_state(self, change: StateChange) -> None:
        if change.state is CameraState.ERROR and not self._camera_failed:
            self._camera_failed = True
            what = f"Camera fault: {change.error or 'unknown'}"
            kind = "fault"
        elif change.state is CameraState.ON and self._camera_failed:
            self._camera_failed = False
            what, kind = "Camera back", "back"
        else:
            if change.state is CameraState.OFF:
                self._camera_failed = False  # switched off: a fault before it is no longer news
            return
        for sender in self._wanting(kind, labelled=None):
            sender.submit(self._message(sender.target, kind, what, self._clock(), None, None, cooled=False))

    def send_test(self, name: str | None = None) -> list[str]:
        """A test message to every target (or the one named), whatever the arming and the cooldown."""
        chosen = [sender for sender in self.senders if name is None or sender.target.name == name]
        if name is not None and not chosen:
            raise KeyError(name)
        for sender in chosen:
            sender.submit(self._message(sender.target, "test", "Test message", self._clock(), None, None,
                                        cooled=False))
        return [sender.target.name for sender in chosen]

    def status(self) -> dict[str, Any]:
        return {"targets": [sender.status() for sender in self.senders]}

    def _told_of(self, event_id: str) -> set[str]:
        """Who was told of an event (targets, and target:label pairs), until its end takes it."""
        told = self._told.setdefault(event_id, set())
        while len(self._told) > 64:  # events whose end never came (a restart) do not pile up
            self._told.pop(next(iter(self._told)))
        return told

    # --- messages --------------------------------------------------------------------------------------

    def _wanting(self, kind: str, labelled: bool | None) -> list[TargetSender]:
        """The senders whose target wants ``kind``; ``labelled``: only those naming labels (True), or
        naming none (False), or either (None)."""
        return [sender for sender in self.senders if kind in sender.target.events
                and (labelled is None or bool(sender.target.labels) == labelled)]

    def _message(self, target: NotifyTarget, kind: str, what: str, at: float, event_id: str | None,
                 jpeg: bytes | None, cooled: bool = True) -> Message:
        base = (self._config.server.public_url or self._page_url()).rstrip("/")
        event = f"{base}/#event-{event_id}" if event_id else f"{base}/"
        fields = {"camera": self._config.name, "what": what, "kind": kind,
                  "time": datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S"), "link": event, "page": f"{base}/",
                  "snapshot": f"{base}/api/events/{event_id}/snapshot.jpg" if event_id else "",
                  "clip": f"{base}/api/events/{event_id}/clip.mp4" if event_id else "", "event_id": event_id or ""}
        body = render(target.body, fields)
        if kind == "end" and event_id and "{clip}" not in target.body:
            body += f"\nClip: {fields['clip']}"
        return Message(kind, render(target.title, fields), body, jpeg if target.attach else None, at, cooled)
