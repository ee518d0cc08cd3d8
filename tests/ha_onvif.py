"""Add the appliance to a running Home Assistant through its ONVIF integration, as the UI does.

Runs inside Home Assistant's virtualenv (it needs aiohttp): reads ``{"ha": URL, "host", "port",
"username", "password", "out"}`` as JSON on stdin. Onboarding makes the owner (``ha_owner.py``); the
``onvif`` config flow is taken by hand (no discovery: ``auto`` off), with the name, host, port and
login; Home Assistant itself then reads the device, its profiles and its events. Each line written
to stdout is JSON, as it happens: the flow's result, the entities the entry made, the HLS playlist
Home Assistant's ``stream`` made from the RTSP address ONVIF gave it (its first segments written to
``"out"`` for ffprobe), the snapshot's first bytes through the camera proxy, and then every state of
the motion binary sensor, so the test acts on them as they come.
"""

import asyncio
import json
import sys

import aiohttp
from ha_owner import onboard


def say(message: dict[str, object]) -> None:
    print(json.dumps(message), flush=True)


async def main() -> None:
    given = json.load(sys.stdin)
    ha = given["ha"]
    async with aiohttp.ClientSession() as session:
        owner = await onboard(session, ha)
        headers, post = owner.headers, owner.post
        flow = await post("/api/config/config_entries/flow", {"handler": "onvif", "show_advanced_options": False})
        if flow.get("step_id") == "user":
            flow = await post(f"/api/config/config_entries/flow/{flow['flow_id']}", {"auto": False})
        if flow.get("step_id") == "configure":
            flow = await post(f"/api/config/config_entries/flow/{flow['flow_id']}", {
                "name": "Garden", "host": given["host"], "port": given["port"], "username": given["username"],
                "password": given["password"]})
        say({"flow": flow.get("type"), "step": flow.get("step_id"), "errors": flow.get("errors"),
             "reason": flow.get("reason"), "placeholders": flow.get("description_placeholders")})
        if flow.get("type") != "create_entry":
            return
        async with owner.websocket() as ws:
            request, entities = 2, []
            # The entry's platforms load in the background: ask the registry until the camera is there.
            while not any(e["entity_id"].startswith("camera.") for e in entities):
                listed = await owner.ask(ws, {"id": request, "type": "config/entity_registry/list"})
                entities = [e for e in listed["result"] if e.get("platform") == "onvif"]
                request += 1
                if not any(e["entity_id"].startswith("camera.") for e in entities):
                    await asyncio.sleep(0.5)
            camera = next(e["entity_id"] for e in entities if e["entity_id"].startswith("camera."))
            say({"entities": sorted(e["entity_id"] for e in entities)})
            async with session.get(f"{ha}/api/camera_proxy/{camera}", headers=headers) as response:
                picture = await response.read()
                say({"snapshot_status": response.status, "snapshot_start": picture[:3].hex(),
                     "snapshot_bytes": len(picture)})
            played = await owner.hls(ws, camera, given["out"], request_id=900)
            say({"hls": "#EXTM3U" in played["master"]})
            # Motion: the binary sensor appears with the first event; then every change of it.
            motion = None
            while True:
                message = await ws.receive_json()
                data = message.get("event", {}).get("data", {})
                entity = data.get("entity_id", "")
                new = data.get("new_state") or {}
                if motion is None and entity.startswith("binary_sensor.") and \
                        new.get("attributes", {}).get("device_class") == "motion":
                    motion = entity
                    say({"motion_entity": motion})
                if entity == motion and new:
                    say({"motion": new["state"]})


asyncio.run(main())
