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
from urllib.parse import urljoin

import aiohttp
from ha_owner import onboard


async def main() -> None:
    given = json.load(sys.stdin)
    ha = given["ha"]
    report: dict[str, object] = {}
    async with aiohttp.ClientSession() as session:
        owner = await onboard(session, ha)
        token, headers, post = owner.token, owner.headers, owner.post

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

        async with session.ws_connect(f"{ha}/api/websocket") as ws:
            await ws.receive_json()  # auth_required
            await ws.send_json({"type": "auth", "access_token": token})
            await ws.receive_json()  # auth_ok
            await ws.send_json({"id": 1, "type": "camera/stream", "entity_id": cameras[0], "format": "hls"})
            answer = await ws.receive_json()
        report["stream_answer"] = answer
        master_url = urljoin(f"{ha}/", answer["result"]["url"])
        async with session.get(master_url) as response:
            master = await response.text()
        report["master"] = master
        playlist_url = urljoin(master_url, next(line for line in master.splitlines() if line and line[0] != "#"))
        # Low-latency HLS: asking for the playlist with the next media sequence number blocks until
        # that segment is complete, so this waits on Home Assistant, never on a clock of ours.
        async with session.get(playlist_url) as response:
            playlist = await response.text()
        segments = [line for line in playlist.splitlines() if line and line[0] != "#"]
        if not segments:
            sequence = next(int(line.split(":")[1]) for line in playlist.splitlines()
                            if line.startswith("#EXT-X-MEDIA-SEQUENCE"))
            async with session.get(playlist_url, params={"_HLS_msn": str(sequence + 1)},
                                   timeout=aiohttp.ClientTimeout(total=60)) as response:
                playlist = await response.text()
            segments = [line for line in playlist.splitlines() if line and line[0] != "#"]
        report["playlist"] = playlist
        init = next(line.split('URI="')[1].split('"')[0] for line in playlist.splitlines()
                    if line.startswith("#EXT-X-MAP"))
        with open(given["out"], "wb") as out:
            for name in (init, segments[0]):
                async with session.get(urljoin(playlist_url, name)) as response:
                    response.raise_for_status()
                    out.write(await response.read())
    json.dump(report, sys.stdout)


asyncio.run(main())
