"""The page people open: live view, switch and state."""

from __future__ import annotations

from flask import Blueprint, render_template

from appliance.web.services import Services

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    services = Services.of()
    return render_template("index.html", name=services.config.name, camera=services.backend_description,
                           backend=services.backend_name, status=services.controller.status(),
                           version=services.version)
