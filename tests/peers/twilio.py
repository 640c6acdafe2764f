"""A local HTTP server speaking Twilio's Calls REST shape, for the voice adapter's tests: it
checks basic auth and the path, records every call request (its form), and answers as told
(a call sid, a 429, a 500, a 400, or nothing for a while)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

ACCOUNT, TOKEN = "AC0123456789abcdef0123456789abcdef", "token-s3cret"


@dataclass
class FakeTwilio:
    calls: list[dict[str, str]] = field(default_factory=list)
    answers: list[tuple[int, str]] = field(default_factory=list)  # served first, in order; then a call sid
    delay_s: float = 0.0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        if request.match_info["account"] != ACCOUNT:
            return web.json_response({"code": 20404, "message": "not found"}, status=404)
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.calls.append(form)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.answers:
            status, body = self.answers.pop(0)
            return web.Response(status=status, text=body, content_type="application/json")
        sid = f"CA{len(self.calls):032x}"
        return web.json_response({"sid": sid, "status": "queued", "to": form.get("To")}, status=201)


@asynccontextmanager
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake
    finally:
        await runner.cleanup()
