"""The owner's session with a fresh Home Assistant, for the drivers that run inside its virtualenv.

Onboarding makes the owner (the REST onboarding API gives an auth code, exchanged for a token), as the
UI's first screen does; ``Owner.post`` then calls the REST API with that token. Imported by
``ha_generic_camera.py`` and ``ha_mqtt_objects.py`` (their folder is on ``sys.path`` when run as scripts).
"""

import json
from dataclasses import dataclass

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
