"""Add the appliance to a running Home Assistant as a Generic Camera and fetch HLS from its stream.

Runs inside Home Assistant's virtualenv (it needs aiohttp): reads ``{"ha": URL, "still": URL,
"stream": RTSP URL, "username", "password"}`` as JSON on stdin, and writes JSON with the config
flow's steps, the camera entity, and the HLS playlist it served. The initialisation segment and the
first media segment are written to the file named by ``"out"`` for ffprobe to read.

The steps are the ones the UI takes: onboarding makes the owner (the REST onboarding API gives an
auth code, exchanged for a token), the config flow of the ``generic`` handler takes the still image
URL and the RTSP stream source with the login (Home Assistant itself checks both: it fetches a still
and opens the stream until HLS has a part), the confirmation step creates the entry, and the
websocket command ``camera/stream`` asks for HLS as the dashboards do.
"""

import asyncio
import json
import sys

import aiohttp
from ha_owner import onboard


async def main() -> None:
    given = json.load(sys.stdin)
    ha = given["ha"]
    report: dict[str, object] = {}
    async with aiohttp.ClientSession() as session:
        owner = await onboard(session, ha)
        headers, post = owner.headers, owner.post

        flow = await post("/api/config/config_entries/flow", {"handler": "generic", "show_advanced_options": False})
        report["first_step"] = flow.get("step_id")
        flow = await post(f"/api/config/config_entries/flow/{flow['flow_id']}", {
            "still_image_url": given["still"], "stream_source": given["stream"], "rtsp_transport": "tcp",
            "authentication": "basic", "username": given["username"], "password": given["password"],
            "framerate": 2, "verify_ssl": False})
        report["second_step"] = flow.get("step_id")
        report["errors"] = flow.get("errors")
        if flow.get("step_id") != "user_confirm":
            json.dump(report, sys.stdout)
            return
        entry = await post(f"/api/config/config_entries/flow/{flow['flow_id']}", {"confirmed_ok": True})
        report["result"] = entry.get("type")
        async with session.get(f"{ha}/api/states", headers=headers) as response:
            states = await response.json()
        cameras = [state["entity_id"] for state in states if state["entity_id"].startswith("camera.")]
        report["cameras"] = cameras

        async with owner.websocket(state_changes=False) as ws:
            report.update(await owner.hls(ws, cameras[0], given["out"], request_id=1))
    json.dump(report, sys.stdout)


asyncio.run(main())
