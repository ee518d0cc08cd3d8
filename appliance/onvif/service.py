"""One ONVIF call in, one SOAP answer out: parsed, its login checked, routed to its operation.

``GetSystemDateAndTime``, ``GetCapabilities`` and ``GetServices`` answer without a login, as clients
expect (they read the camera's clock before they sign anything, and UniFi Protect asks for it
bare); every other operation needs the UsernameToken (``wsse``). An operation we do not answer is a
``ter:ActionNotSupported`` fault; those that would change what the configuration file says
(encoder settings, profiles, users, reboots) are refused the same way, with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from appliance.onvif import device, media
from appliance.onvif.device import Facts
from appliance.onvif.events import EVENT_PROPERTIES, MotionEvents, TooManySubscriptions, message_xml, utc
from appliance.onvif.notify import Notifier, RefusedConsumer
from appliance.onvif.soap import BadRequest, Request, child_text, envelope, fault, parse
from appliance.onvif.wsse import TokenCheck

log = logging.getLogger(__name__)

class Subscriptions(Protocol):
    """What pull points (``MotionEvents``) and pushed subscriptions (``Notifier``) both offer."""

    def renew(self, key: str, termination: str | None) -> float | None: ...

    def unsubscribe(self, key: str) -> bool: ...

    def synchronize(self, key: str) -> bool: ...


OPEN = {("device", "GetSystemDateAndTime"), ("device", "GetCapabilities"), ("device", "GetServices")}
CONFIGURED = {"SetVideoEncoderConfiguration", "SetVideoSourceConfiguration", "CreateProfile", "DeleteProfile",
              "AddVideoEncoderConfiguration", "RemoveVideoEncoderConfiguration", "SetSystemFactoryDefault",
              "SystemReboot", "CreateUsers", "DeleteUsers", "SetUser", "SetHostname", "SetNetworkInterfaces",
              "SetScopes", "SetDNS", "SetNTP"}


class OnvifService:
    """The device and media services of one appliance; ``facts`` are set once its ports are known."""

    def __init__(self, tokens: TokenCheck, events: MotionEvents, pushes: Notifier,
                 clock: Callable[[], float] = time.time) -> None:
        self._tokens = tokens
        self.events = events
        self.pushes = pushes
        self._clock = clock
        self.facts: Facts | None = None
        self.calls = 0
        self.refused = 0

    def handle(self, service: str, data: bytes, address: str, host: str, subscription: str = "") -> tuple[int, bytes]:
        """(HTTP status, SOAP envelope) for one call to ``service`` (``device``, ``media``, ``events``,
        or ``pullpoint`` with its ``subscription``) from ``address``, which reached us as ``host``."""
        self.calls += 1
        try:
            request = parse(data)
        except BadRequest as exc:
            self.refused += 1
            log.info("ONVIF: a request from %s refused: %s", address, exc)
            return 400, fault("Sender", "ter:WellFormed", str(exc))
        if (service, request.operation) not in OPEN:
            problem = self._tokens.check(request.header, address)
            if problem is not None:
                self.refused += 1
                log.warning("ONVIF: %s from %s refused: %s", request.operation, address, problem)
                return 400, fault("Sender", "ter:NotAuthorized", problem)
        if request.operation in CONFIGURED:
            return 400, fault("Receiver", "ter:ActionNotSupported",
                              f"{request.operation}: this camera is set up in its configuration file, not over ONVIF")
        facts = self.facts
        if facts is None:
            return 503, fault("Receiver", "ter:Action", "the camera is starting")
        try:
            if service == "device":
                body = device.answer(facts, request, host, self._clock())
            elif service == "media":
                body = media.answer(facts, request, host)
            elif service == "subscription":
                body = self._manage(self.pushes, request, subscription, "notification")
            else:
                body = self._events(facts, request, host, subscription, address)
        except media.NoSuchProfile as exc:
            return 400, fault("Sender", "ter:InvalidArgVal", str(exc))
        except (TooManySubscriptions, RefusedConsumer) as exc:
            return 400, fault("Receiver", "ter:Action", str(exc))
        except LookupError as exc:
            return 400, fault("Sender", "ter:InvalidArgVal", str(exc))
        if body is None:
            return 400, fault("Receiver", "ter:ActionNotSupported",
                              f"{request.operation[:64]} is not offered by this camera's {service} service")
        return 200, envelope(body)

    def _events(self, facts: Facts, request: Request, host: str, subscription: str, address: str) -> str | None:
        """The event service's operations, and those of one pull-point subscription."""
        events, now = self.events, self._clock()
        if not subscription:
            match request.operation:
                case "Subscribe":
                    push = self.pushes.subscribe(child_text(request.body, "ConsumerReference", "Address") or "",
                                                 address, child_text(request.body, "InitialTerminationTime"))
                    return ("<wsnt:SubscribeResponse><wsnt:SubscriptionReference><wsa:Address>"
                            f"{facts.base(host)}/onvif/subscription/{push.id}</wsa:Address>"
                            f"</wsnt:SubscriptionReference><wsnt:CurrentTime>{utc(now)}</wsnt:CurrentTime>"
                            f"<wsnt:TerminationTime>{utc(push.ends_at)}</wsnt:TerminationTime>"
                            "</wsnt:SubscribeResponse>")
                case "CreatePullPointSubscription":
                    created = events.create(child_text(request.body, "InitialTerminationTime"))
                    return ("<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>"
                            f"{facts.base(host)}/onvif/pullpoint/{created.id}</wsa:Address>"
                            f"</tev:SubscriptionReference><wsnt:CurrentTime>{utc(now)}</wsnt:CurrentTime>"
                            f"<wsnt:TerminationTime>{utc(created.ends_at)}</wsnt:TerminationTime>"
                            "</tev:CreatePullPointSubscriptionResponse>")
                case "GetServiceCapabilities":
                    return ('<tev:GetServiceCapabilitiesResponse><tev:Capabilities WSSubscriptionPolicySupport="false"'
                            ' WSPullPointSupport="true" WSPausableSubscriptionManagerInterfaceSupport="false"'
                            f' MaxNotificationProducers="{self.pushes.max_subscriptions}"'
                            f' MaxPullPoints="{events.max_subscriptions}"/>'
                            "</tev:GetServiceCapabilitiesResponse>")
                case "GetEventProperties":
                    return EVENT_PROPERTIES
            return None
        if request.operation != "PullMessages":
            return self._manage(events, request, subscription, "event")
        limit = child_text(request.body, "MessageLimit") or "100"
        taken = events.pull(subscription, child_text(request.body, "Timeout"),
                            int(limit) if limit.strip().isdigit() else 100)
        current = events.get(subscription)
        if taken is None or current is None:
            raise LookupError(f"no event subscription {subscription[:32]!r} (it ended, or never was)")
        messages = "".join(message_xml(note, media.SOURCE_CONFIG) for note in taken)
        return (f"<tev:PullMessagesResponse><tev:CurrentTime>{utc(self._clock())}</tev:CurrentTime>"
                f"<tev:TerminationTime>{utc(current.ends_at)}</tev:TerminationTime>{messages}"
                "</tev:PullMessagesResponse>")

    def _manage(self, store: Subscriptions, request: Request, key: str, kind: str) -> str | None:
        """Renew, Unsubscribe, SetSynchronizationPoint: the same on a pull point and on a Subscribe
        subscription's manager."""
        gone = LookupError(f"no {kind} subscription {key[:32]!r} (it ended, or never was)")
        match request.operation:
            case "Renew":
                renewed = store.renew(key, child_text(request.body, "TerminationTime"))
                if renewed is None:
                    raise gone
                return (f"<wsnt:RenewResponse><wsnt:TerminationTime>{utc(renewed)}</wsnt:TerminationTime>"
                        f"<wsnt:CurrentTime>{utc(self._clock())}</wsnt:CurrentTime></wsnt:RenewResponse>")
            case "Unsubscribe":
                if not store.unsubscribe(key):
                    raise gone
                return "<wsnt:UnsubscribeResponse/>"
            case "SetSynchronizationPoint":
                if not store.synchronize(key):
                    raise gone
                return "<tev:SetSynchronizationPointResponse/>"
        return None
