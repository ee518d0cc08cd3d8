"""Connect a running Home Assistant to an MQTT broker and follow one discovered binary sensor.

Runs inside Home Assistant's virtualenv (it needs aiohttp): reads ``{"ha": URL, "broker_port": N,
"unique_id": ID}`` as JSON on stdin. Onboarding makes the owner and a token (as in
``ha_generic_camera.py``); the ``mqtt`` config flow takes the broker as the UI does; then the entity
registry (websocket) names the entity whose ``unique_id`` is given, and its state changes are
followed. Each line written to stdout is JSON: ``{"entity": ...}`` once found, then ``{"state": ...,
"name": ...}`` at every change, so the test can act on them as they come.
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

        flow = await post("/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False})
        if flow.get("step_id") == "broker" and flow.get("type") == "form":
            flow = await post(f"/api/config/config_entries/flow/{flow['flow_id']}",
                              {"broker": "127.0.0.1", "port": given["broker_port"]})
        say({"flow": flow.get("type"), "errors": flow.get("errors")})
        if flow.get("type") != "create_entry":
            return
        async with owner.websocket() as ws:
            entity = None
            request = 2
            while entity is None:  # discovery is asynchronous: ask the registry until the entity is there
                answer = await owner.ask(ws, {"id": request, "type": "config/entity_registry/list"})
                entity = next((e["entity_id"] for e in answer["result"] if e.get("unique_id") == given["unique_id"]),
                              None)
                request += 1
                if entity is None:
                    await asyncio.sleep(0.5)
            say({"entity": entity})
            async with session.get(f"{ha}/api/states/{entity}", headers=headers) as response:
                state = await response.json()
            say({"state": state["state"], "name": state["attributes"].get("friendly_name")})
            while True:
                message = await ws.receive_json()
                data = message.get("event", {}).get("data", {})
                if data.get("entity_id") == entity and data.get("new_state"):
                    new = data["new_state"]
                    say({"state": new["state"], "name": new["attributes"].get("friendly_name")})


asyncio.run(main())
