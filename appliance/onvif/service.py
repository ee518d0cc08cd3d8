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

from appliance.onvif import device, media
from appliance.onvif.device import Facts
from appliance.onvif.soap import BadRequest, envelope, fault, parse
from appliance.onvif.wsse import TokenCheck

log = logging.getLogger(__name__)

OPEN = {("device", "GetSystemDateAndTime"), ("device", "GetCapabilities"), ("device", "GetServices")}
CONFIGURED = {"SetVideoEncoderConfiguration", "SetVideoSourceConfiguration", "CreateProfile", "DeleteProfile",
              "AddVideoEncoderConfiguration", "RemoveVideoEncoderConfiguration", "SetSystemFactoryDefault",
              "SystemReboot", "CreateUsers", "DeleteUsers", "SetUser", "SetHostname", "SetNetworkInterfaces",
              "SetScopes", "SetDNS", "SetNTP"}


class OnvifService:
    """The device and media services of one appliance; ``facts`` are set once its ports are known."""

    def __init__(self, tokens: TokenCheck, clock: Callable[[], float] = time.time) -> None:
        self._tokens = tokens
        self._clock = clock
        self.facts: Facts | None = None
        self.calls = 0
        self.refused = 0

    def handle(self, service: str, data: bytes, address: str, host: str) -> tuple[int, bytes]:
        """(HTTP status, SOAP envelope) for one call to ``service`` (``device`` or ``media``) from
        ``address``, which reached us as ``host``."""
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
            body = device.answer(facts, request, host, self._clock()) if service == "device" \
                else media.answer(facts, request, host)
        except media.NoSuchProfile as exc:
            return 400, fault("Sender", "ter:InvalidArgVal", str(exc))
        if body is None:
            return 400, fault("Receiver", "ter:ActionNotSupported",
                              f"{request.operation[:64]} is not offered by this camera's {service} service")
        return 200, envelope(body)
