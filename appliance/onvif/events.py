"""Motion as ONVIF events, by PullPoint: the subscriptions and the messages that wait in them.

A client (Home Assistant, an NVR) creates a pull-point subscription on the event service, then calls
``PullMessages`` on the subscription's own address again and again; each call waits up to its
``Timeout`` (at most ``MAX_WAIT`` here, so a waiting call holds a server thread for seconds, not a
minute) and returns at once when motion starts or ends. The message is the one Home Assistant and
NVRs parse: topic ``tns1:RuleEngine/CellMotionDetector/Motion``, source the video source
configuration and the rule, data ``IsMotion`` ``true`` or ``false`` (the literal words). A new
subscription, and ``SetSynchronizationPoint``, first get the current state (``Initialized``).

Subscriptions are bounded (``max_subscriptions``: more get a fault), each holds at most
``QUEUE`` messages (the oldest go first), and each ends at its termination time unless renewed
(at most ``MAX_TERMINATION`` ahead); an ended one is forgotten at the next call.
"""

from __future__ import annotations

import datetime
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.motion.events import EventChange
from appliance.onvif.soap import text

TOPIC = "tns1:RuleEngine/CellMotionDetector/Motion"
QUEUE = 64
MAX_WAIT = 10.0  # s a PullMessages call waits at most
MAX_TERMINATION = 3600.0  # s ahead a subscription may be set to end
DEFAULT_TERMINATION = 60.0
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


class TooManySubscriptions(Exception):
    """``onvif.max_subscriptions`` are open."""


def seconds_of(value: str | None, now: float, default: float) -> float:
    """A termination or timeout given as an ISO 8601 duration (``PT60S``) or an absolute time: the
    seconds from ``now`` (wall clock) it means, or ``default`` when absent or not understood."""
    if not value:
        return default
    value = value.strip()
    match = _DURATION.match(value)
    if match and any(match.groups()):
        days, hours, minutes, secs = (float(part) if part else 0.0 for part in match.groups())
        return days * 86400 + hours * 3600 + minutes * 60 + secs
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp() - now


def ends_at(termination: str | None, now: float) -> float:
    """When a subscription asked to end at ``termination`` (a duration or a time) ends: at least a
    second and at most ``MAX_TERMINATION`` from ``now``, ``DEFAULT_TERMINATION`` when not given."""
    return now + min(MAX_TERMINATION, max(1.0, seconds_of(termination, now, DEFAULT_TERMINATION)))


def utc(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Notification:
    at: float  # wall clock
    motion: bool
    operation: str  # Initialized, Changed


def message_xml(note: Notification, source: str) -> str:
    """One wsnt:NotificationMessage, as Home Assistant's parser reads it."""
    return ('<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/'
            f'ConcreteSet">{TOPIC}</wsnt:Topic><wsnt:Message><tt:Message UtcTime="{utc(note.at)}" '
            f'PropertyOperation="{note.operation}"><tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" '
            f'Value="{text(source)}"/><tt:SimpleItem Name="VideoAnalyticsConfigurationToken" Value="analytics"/>'
            '<tt:SimpleItem Name="Rule" Value="MotionRule"/></tt:Source><tt:Data><tt:SimpleItem Name="IsMotion" '
            f'Value="{"true" if note.motion else "false"}"/></tt:Data></tt:Message></wsnt:Message>'
            "</wsnt:NotificationMessage>")


@dataclass(eq=False)
class Subscription:
    id: str
    ends_at: float  # wall clock
    queue: deque[Notification] = field(default_factory=lambda: deque(maxlen=QUEUE))
    waiting: int = 0


class MotionEvents:
    """The motion state and the pull-point subscriptions; a motion listener of the controller."""

    def __init__(self, max_subscriptions: int, motion_now: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.max_subscriptions = max_subscriptions
        self._motion_now = motion_now
        self._clock = clock
        self._cond = threading.Condition()
        self._subscriptions: dict[str, Subscription] = {}
        self._closed = False
        self.refused = 0

    # --- the controller's side -------------------------------------------------------------------

    def on_motion(self, change: EventChange, _jpeg: bytes | None) -> None:
        """A motion listener: motion started or ended; every subscription hears it."""
        note = Notification(self._clock(), change.kind == "start", "Changed")
        with self._cond:
            for subscription in self._subscriptions.values():
                subscription.queue.append(note)
            self._cond.notify_all()

    def close(self) -> None:
        """Shutdown: waiting calls return now, with what they have."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- the clients' side (server threads) --------------------------------------------------------

    def _expire(self, now: float) -> None:
        for key in [key for key, sub in self._subscriptions.items() if sub.ends_at <= now and not sub.waiting]:
            del self._subscriptions[key]

    def create(self, termination: str | None) -> Subscription:
        now = self._clock()
        with self._cond:
            self._expire(now)
            if len(self._subscriptions) >= self.max_subscriptions:
                self.refused += 1
                raise TooManySubscriptions(f"at most {self.max_subscriptions} event subscriptions at once")
            subscription = Subscription(secrets.token_hex(8), ends_at(termination, now))
            subscription.queue.append(Notification(now, self._motion_now(), "Initialized"))
            self._subscriptions[subscription.id] = subscription
        return subscription

    def get(self, key: str) -> Subscription | None:
        with self._cond:
            self._expire(self._clock())
            return self._subscriptions.get(key)

    def renew(self, key: str, termination: str | None) -> float | None:
        """The new end time, or None when the subscription has ended."""
        now = self._clock()
        with self._cond:
            subscription = self._subscriptions.get(key)
            if subscription is None or subscription.ends_at <= now:
                return None
            subscription.ends_at = ends_at(termination, now)
            return subscription.ends_at

    def unsubscribe(self, key: str) -> bool:
        with self._cond:
            found = self._subscriptions.pop(key, None) is not None
            self._cond.notify_all()
            return found

    def synchronize(self, key: str) -> bool:
        """``SetSynchronizationPoint``: the current state comes with the next pull."""
        with self._cond:
            subscription = self._subscriptions.get(key)
            if subscription is None:
                return False
            subscription.queue.append(Notification(self._clock(), self._motion_now(), "Initialized"))
            self._cond.notify_all()
            return True

    def pull(self, key: str, timeout: str | None, limit: int) -> list[Notification] | None:
        """Up to ``limit`` messages, waiting up to ``timeout`` (at most ``MAX_WAIT``) for the first;
        None when the subscription does not exist (any more)."""
        wait = min(MAX_WAIT, max(0.0, seconds_of(timeout, self._clock(), MAX_WAIT)))
        with self._cond:
            subscription = self._subscriptions.get(key)
            if subscription is None:
                return None
            subscription.waiting += 1
            try:
                self._cond.wait_for(lambda: bool(subscription.queue) or self._closed
                                    or key not in self._subscriptions, wait)
            finally:
                subscription.waiting -= 1
            taken = [subscription.queue.popleft() for _ in range(min(max(1, limit), len(subscription.queue)))]
            return taken

    @property
    def subscriptions(self) -> int:
        with self._cond:
            return len(self._subscriptions)


EVENT_PROPERTIES = (
    "<tev:GetEventPropertiesResponse>"
    "<tev:TopicNamespaceLocation>http://www.onvif.org/onvif/ver10/topics/topicns.xml</tev:TopicNamespaceLocation>"
    "<wsnt:FixedTopicSet>true</wsnt:FixedTopicSet><wstop:TopicSet><tns1:RuleEngine><CellMotionDetector>"
    '<Motion wstop:topic="true"><tt:MessageDescription IsProperty="true"><tt:Source>'
    '<tt:SimpleItemDescription Name="VideoSourceConfigurationToken" Type="tt:ReferenceToken"/>'
    '<tt:SimpleItemDescription Name="VideoAnalyticsConfigurationToken" Type="tt:ReferenceToken"/>'
    '<tt:SimpleItemDescription Name="Rule" Type="xs:string"/></tt:Source><tt:Data>'
    '<tt:SimpleItemDescription Name="IsMotion" Type="xs:boolean"/></tt:Data></tt:MessageDescription></Motion>'
    "</CellMotionDetector></tns1:RuleEngine></wstop:TopicSet>"
    "<wsnt:TopicExpressionDialect>http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
    "</wsnt:TopicExpressionDialect><tev:MessageContentFilterDialect>"
    "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter</tev:MessageContentFilterDialect>"
    "<tev:MessageContentSchemaLocation>http://www.onvif.org/onvif/ver10/schema/onvif.xsd"
    "</tev:MessageContentSchemaLocation></tev:GetEventPropertiesResponse>")
