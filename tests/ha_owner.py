"""The owner's session with a fresh Home Assistant, for the drivers that run inside its virtualenv.

Onboarding makes the owner (the REST onboarding API gives an auth code, exchanged for a token), as the
UI's first screen does; ``Owner.post`` then calls the REST API with that token, ``Owner.websocket``
opens the websocket API (state changes followed when asked), and ``Owner.registry`` and
``Owner.hls`` are what the drivers ask of it. Imported by ``ha_generic_camera.py``,
``ha_mqtt_objects.py`` and ``ha_onvif.py`` (their folder is on ``sys.path`` when run as scripts).
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp


@dataclass
class Owner:
    session: aiohttp.ClientSession
    ha: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        async with self.session.post(f"{self.ha}{path}", json=body, headers=self.headers) as response:
            text = await response.text()
            if response.status >= 400:
                raise RuntimeError(f"{path}: {response.status} {text}")
            return json.loads(text)

    @asynccontextmanager
    async def websocket(self, state_changes: bool = True) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """The websocket API, authenticated; with ``state_changes`` every state change comes on it."""
        async with self.session.ws_connect(f"{self.ha}/api/websocket") as ws:
            await ws.receive_json()  # auth_required
            await ws.send_json({"type": "auth", "access_token": self.token})
            await ws.receive_json()  # auth_ok
            if state_changes:
                await ws.send_json({"id": 1, "type": "subscribe_events", "event_type": "state_changed"})
                await ws.receive_json()
            yield ws

    @staticmethod
    async def ask(ws: aiohttp.ClientWebSocketResponse, request: dict[str, object]) -> dict[str, object]:
        """One websocket command's result (other messages meanwhile are passed over)."""
        await ws.send_json(request)
        while True:
            answer = await ws.receive_json()
            if answer.get("id") == request["id"] and answer.get("type") == "result":
                return answer

    async def hls(self, ws: aiohttp.ClientWebSocketResponse, camera: str, out: str,
                  request_id: int) -> dict[str, str]:
        """Ask for a camera's HLS as the dashboards do (``camera/stream``), write its init segment and
        first media segment to ``out``; the master playlist and the media playlist."""
        answer = await self.ask(ws, {"id": request_id, "type": "camera/stream", "entity_id": camera, "format": "hls"})
        master_url = urljoin(f"{self.ha}/", answer["result"]["url"])  # type: ignore[index]
        async with self.session.get(master_url) as response:
            master = await response.text()
        playlist_url = urljoin(master_url, next(line for line in master.splitlines() if line and line[0] != "#"))
        # Low-latency HLS: asking for the playlist with the next media sequence number blocks until
        # that segment is complete, so this waits on Home Assistant, never on a clock of ours.
        async with self.session.get(playlist_url) as response:
            playlist = await response.text()
        segments = [line for line in playlist.splitlines() if line and line[0] != "#"]
        if not segments:
            sequence = next(int(line.split(":")[1]) for line in playlist.splitlines()
                            if line.startswith("#EXT-X-MEDIA-SEQUENCE"))
            async with self.session.get(playlist_url, params={"_HLS_msn": str(sequence + 1)},
                                        timeout=aiohttp.ClientTimeout(total=60)) as response:
                playlist = await response.text()
            segments = [line for line in playlist.splitlines() if line and line[0] != "#"]
        init = next(line.split('URI="')[1].split('"')[0] for line in playlist.splitlines()
                    if line.startswith("#EXT-X-MAP"))
        with open(out, "wb") as file:
            for name in (init, segments[0]):
                async with self.session.get(urljoin(playlist_url, name)) as response:
                    response.raise_for_status()
                    file.write(await response.read())
        return {"master": master, "playlist": playlist}


async def onboard(session: aiohttp.ClientSession, ha: str) -> Owner:
    client_id = f"{ha}/"
    async with session.post(f"{ha}/api/onboarding/users", json={
            "client_id": client_id, "name": "Test", "username": "owner", "password": "owner-secret-1",
            "language": "en"}) as response:
        response.raise_for_status()
        code = (await response.json())["auth_code"]
    async with session.post(f"{ha}/auth/token", data={
            "grant_type": "authorization_code", "code": code, "client_id": client_id}) as response:
        response.raise_for_status()
        token = (await response.json())["access_token"]
    return Owner(session, ha, token)
