"""A local fake of SendGrid's v3 Mail Send API: `POST /v3/mail/send` with a bearer key.

It checks what SendGrid's API documents before accepting a message: the key; a JSON object; at
least one personalization with at least one `to` address; `from.email`; a subject; content
parts with a `type` and a non-empty `value`, text/plain first; string-valued `custom_args` and
`headers`. It answers `202 Accepted` with an `X-Message-Id`, `401` for a wrong key, `400` with
SendGrid's `{"errors": [...]}` for a malformed message; tests can queue other answers (a `429`
with `X-RateLimit-Reset`, a `500`) or a delay.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from aiohttp import web


class FakeSendGrid:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.accepted: list[dict[str, Any]] = []  # bodies of accepted messages, in order
        self.requests = 0
        self.queued: list[tuple[int, dict[str, str]]] = []  # answers to give first (status, headers)
        self.delay_s = 0.0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v3/mail/send", self._send)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _send(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _errors(401, [("The provided authorization grant is invalid, expired, or revoked", None)])
        if self.queued:
            status, headers = self.queued.pop(0)
            return web.json_response({"errors": [{"message": "queued answer", "field": None}]}, status=status, headers=headers)
        try:
            body = await request.json()
        except ValueError:
            return _errors(400, [("Bad Request", None)])
        problems = _problems(body)
        if problems:
            return _errors(400, problems)
        self.accepted.append(body)
        return web.Response(status=202, headers={"X-Message-Id": f"fake-{next(self._ids)}"})

    def rate_limit_once(self, seconds: float) -> None:
        self.queued.append((429, {"X-RateLimit-Reset": str(int(time.time() + seconds))}))


def _errors(status: int, problems: list[tuple[str, str | None]]) -> web.Response:
    return web.json_response({"errors": [{"message": m, "field": f, "help": None} for m, f in problems]}, status=status)


def _problems(body: Any) -> list[tuple[str, str | None]]:
    if not isinstance(body, dict):
        return [("The request body must be a JSON object.", None)]
    out: list[tuple[str, str | None]] = []
    people = body.get("personalizations")
    if not isinstance(people, list) or not people or not all(isinstance(p, dict) and p.get("to") for p in people):
        out.append(("The personalizations field is required and must have at least one personalization.", "personalizations"))
    else:
        for i, p in enumerate(people):
            for j, to in enumerate(p["to"]):
                if not isinstance(to, dict) or "@" not in str(to.get("email", "")):
                    out.append(("Does not contain a valid address.", f"personalizations.{i}.to.{j}.email"))
    if not isinstance(body.get("from"), dict) or "@" not in str(body["from"].get("email", "")):
        out.append(("The from object must be provided for every email send.", "from"))
    if not body.get("subject"):
        out.append(("The subject is required.", "subject"))
    content = body.get("content")
    if not isinstance(content, list) or not content or any(not c.get("type") or not c.get("value") for c in content):
        out.append(("Content must have a type and a non-empty value.", "content"))
    elif content[0]["type"] != "text/plain":
        out.append(("If present, text/plain must be first.", "content"))
    for field in ("custom_args", "headers"):
        values = body.get(field, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            out.append((f"{field} values must be strings.", field))
    return out
