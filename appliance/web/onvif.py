"""ONVIF's SOAP endpoints on the HTTP port (``appliance/onvif/``): 404 while ONVIF is off.

The HTTP login does not apply here (ONVIF calls carry their own, checked by the service); the Host
and cross-site checks and the body limit do, as on every route.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from appliance.onvif.soap import CONTENT_TYPE
from appliance.web.security import split_host
from appliance.web.services import Services, json_error

bp = Blueprint("onvif", __name__)


def _call(service: str, subscription: str = "") -> Response:
    onvif = Services.of().onvif
    if onvif is None:
        return json_error(404, "ONVIF is off (onvif.enabled in the configuration)")
    host = split_host(request.host)[0] or "127.0.0.1"
    status, body = onvif.handle(service, request.get_data(cache=False), request.remote_addr or "unknown",
                                f"[{host}]" if ":" in host else host, subscription)
    return Response(body, status=status, content_type=CONTENT_TYPE)


@bp.post("/onvif/device_service")
def device_service() -> Response:
    return _call("device")


@bp.post("/onvif/media_service")
def media_service() -> Response:
    return _call("media")


@bp.post("/onvif/events_service")
def events_service() -> Response:
    return _call("events")


@bp.post("/onvif/subscription/<subscription>")
def subscription_manager(subscription: str) -> Response:
    """One Subscribe subscription: Renew, Unsubscribe, SetSynchronizationPoint."""
    return _call("subscription", subscription)


@bp.post("/onvif/pullpoint/<subscription>")
def pullpoint(subscription: str) -> Response:
    """One pull-point subscription: PullMessages (waits up to 10 s), Renew, Unsubscribe,
    SetSynchronizationPoint."""
    return _call("pullpoint", subscription)
