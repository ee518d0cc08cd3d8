"""The page people open: live view, switch and state; and what makes it a home-screen app."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template, url_for

from appliance.web.services import Services

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    services = Services.of()
    return render_template("index.html", name=services.config.name, camera=services.backend_description,
                           backend=services.backend_name, status=services.controller.status(),
                           version=services.version, rtsp=services.integrations().get("rtsp"),
                           h264=services.h264_viewers is not None)


@bp.get("/manifest.webmanifest")
def manifest() -> Response:
    """The web app manifest: "Add to home screen" opens the page full-screen under the device's name.
    Everything it names is served here; a phone needs no internet to install or open it."""
    name = Services.of().config.name
    icons = [{"src": url_for("static", filename=f"icon-{size}.png"), "sizes": f"{size}x{size}", "type": "image/png",
              "purpose": purpose} for size in (192, 512) for purpose in ("any", "maskable")]
    response = jsonify({"name": name, "short_name": name if len(name) <= 12 else name[:11] + "…", "id": "/",
                        "start_url": "/", "scope": "/", "display": "standalone", "background_color": "#111111",
                        "theme_color": "#1f6feb", "description": "Live view, switch and motion events", "icons": icons})
    response.mimetype = "application/manifest+json"
    return response
