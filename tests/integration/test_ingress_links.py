"""The ingress's links over real HTTP: the open pixel, tracked links and one-click unsubscribe
of an email the smtp adapter sent to aiosmtpd, forged and altered tokens, a mail scanner that
fetches every link, bodies that are too big or too slow."""

from __future__ import annotations

import asyncio

import aiohttp

from dee import EngineConfig, load_plan
from dee.kernel import tokens
from tests.integration.ingress_helpers import running


async def test_an_open_a_click_and_a_one_click_unsubscribe_reach_the_run(deployment: EngineConfig) -> None:
    async with running(deployment) as d:
        run_id = await d.enrol("c1")
        other = await d.enrol("c2")
        welcome = (await d.engine.execute(load_plan("config/plans/welcome-sequence.yaml"), {"id": "c1", "email": "c1@acme.test"},
                                          {"product": "DEE"})).id  # fmt: skip
        await d.engine.run_until_idle()
        links = d.links(run_id)
        assert sorted(links) == ["c", "o", "u"]
        async with d.http.get(d.local(links["o"])) as response:
            assert (response.status, response.content_type) == (200, "image/gif")
            assert (await response.read()).startswith(b"GIF89a")
        async with d.http.get(d.local(links["c"]), allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (302, "https://example.com/product")
        for _ in range(3):  # a pixel loaded again, a link clicked twice: the same events
            async with d.http.get(d.local(links["o"])) as response:
                assert response.status == 200
            async with d.http.get(d.local(links["c"]), allow_redirects=False) as response:
                assert response.status == 302
        await d.engine.run_until_idle()
        assert await d.events(run_id) == ["email.opened", "email.clicked"]
        # RFC 8058: the POST the mail client makes from List-Unsubscribe and List-Unsubscribe-Post
        mail = d.email_of(run_id)
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        async with d.http.post(d.local(links["u"]), data={"List-Unsubscribe": "One-Click"}) as response:
            assert response.status == 200 and "unsubscribed" in await response.text()
        await d.engine.run_until_idle()
        for stopped in (run_id, welcome):  # every run of the contact, whichever email the click came from
            run = await d.engine.get_run(stopped)
            assert (run.status, run.outcome) in (("completed", "unsubscribed"), ("cancelled", None)), (run.status, run.outcome)
        assert (await d.engine.get_run(other)).status == "waiting"  # another contact goes on
        report = await d.engine.compliance.report(0, await d.engine.now_tick())
        assert [(s.contact_id, s.reason) for s in report.suppressions] == [("c1", "unsubscribe")]
        assert sorted(u.run_id for u in report.unsubscribes) == sorted([run_id, welcome])
        assert all(u.requested_at is not None and u.seconds_from_request is not None for u in report.unsubscribes)


async def test_forged_altered_and_misused_tokens_get_a_4xx_and_record_nothing(deployment: EngineConfig) -> None:
    async with running(deployment) as d:
        run_id = await d.enrol("c1")
        links = d.links(run_id)
        pixel = links["o"].rsplit("/", 1)[1]
        body, _, signature = pixel.partition("~")
        forged = tokens.make(b"not the deployment's key" * 2, "o", run_id, "initial-email", "c1", 10**9)
        other_run = tokens.make(b"", "o", "someone-else", "initial-email", "c1", 10**9).partition("~")[0] + "~" + signature
        for path in (f"/o/{forged}", f"/o/{other_run}", f"/o/{body}~", f"/o/{body}", "/o/~", "/o/%00", f"/o/{'A' * 3000}~x",
                     f"/c/{pixel}?u=https://example.com/product",  # an open token is no click token
                     f"/u/{pixel}"):  # fmt: skip
            async with d.http.get(d.base + path, allow_redirects=False) as response:
                assert response.status == 404, path
        # a click token redirects only to the URL it was made for: never an open redirect
        click = d.local(links["c"]).split("?")[0]
        for target in ("https://evil.example/", "https://example.com/product/../admin", "javascript:alert(1)", ""):
            async with d.http.get(click, params={"u": target}, allow_redirects=False) as response:
                assert response.status == 404 and "Location" not in response.headers, target
        async with d.http.post(d.local(links["u"]), data={"List-Unsubscribe": "Yes please"}) as response:
            assert response.status == 400  # not RFC 8058's body
        await d.engine.run_until_idle()
        assert await d.events(run_id) == []
        assert (await d.engine.get_run(run_id)).status == "waiting"


async def test_a_scanner_that_fetches_every_link_unsubscribes_no_one(deployment: EngineConfig) -> None:
    async with running(deployment) as d:
        run_id = await d.enrol("c1")
        links = d.links(run_id)
        for link in links.values():  # GET and HEAD, as link scanners and previewers do
            async with d.http.get(d.local(link), allow_redirects=False) as response:
                assert response.status in (200, 302)
            async with d.http.head(d.local(link), allow_redirects=False) as response:
                assert response.status == 405
        async with d.http.get(d.local(links["u"])) as response:
            page = await response.text()
            assert response.status == 200 and 'method="post"' in page and 'value="One-Click"' in page
        await d.engine.run_until_idle()
        assert "email.unsubscribed" not in await d.events(run_id)
        assert (await d.engine.get_run(run_id)).status == "waiting"
        report = await d.engine.compliance.report(0, await d.engine.now_tick())
        assert report.suppressions == []


async def test_links_expire_but_unsubscribe_links_never_do(deployment: EngineConfig) -> None:
    async with running(deployment, token_ttl_days=1) as d:
        run_id = await d.enrol("c1")
        links = d.links(run_id)
        await d.engine.advance_clock(86_400 + 1)  # one-second ticks: a day and a tick later
        async with d.http.get(d.local(links["o"])) as response:
            assert response.status == 410
        async with d.http.get(d.local(links["c"]), allow_redirects=False) as response:
            assert response.status == 410
        async with d.http.post(d.local(links["u"]), data={"List-Unsubscribe": "One-Click"}) as response:
            assert response.status == 200
        await d.engine.run_until_idle()
        assert await d.events(run_id) == ["email.unsubscribed"]


async def test_oversized_and_slow_bodies_are_refused_and_the_ingress_stays_up(deployment: EngineConfig) -> None:
    async with running(deployment, max_body_bytes=10_000, request_timeout_ms=500) as d:
        run_id = await d.enrol("c1")
        unsubscribe = d.local(d.links(run_id)["u"])
        async with d.http.post(unsubscribe, data=b"List-Unsubscribe=One-Click&x=" + b"a" * 20_000,
                               headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
            assert response.status == 413
        # a body that trickles in: the request times out, the connection is let go
        port = d.served.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        path = unsubscribe.split(str(port), 1)[1]
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: 26\r\n\r\nList-".encode())  # fmt: skip
        await writer.drain()
        status = (await asyncio.wait_for(reader.readline(), 5)).decode()
        assert status.startswith("HTTP/1.1 408"), status
        writer.close()
        async with d.http.get(d.base + "/healthz") as response:
            assert response.status == 200
        await d.engine.run_until_idle()
        assert await d.events(run_id) == []


async def test_a_multipart_one_click_counts_and_a_hostile_content_type_is_a_400(deployment: EngineConfig) -> None:
    async with running(deployment) as d:
        run_id = await d.enrol("c1")
        unsubscribe = d.local(d.links(run_id)["u"])
        for content_type in ("multipart/form-data; boundary=" + "(" * 4000, 'multipart/form-data; boundary="' + '\\"' * 3000,
                             "(" * 4000, "text/plain"):  # fmt: skip
            async with d.http.post(unsubscribe, data=b"List-Unsubscribe=One-Click", headers={"Content-Type": content_type}) as response:
                assert response.status == 400, content_type[:40]
        await d.engine.run_until_idle()
        assert await d.events(run_id) == []
        form = aiohttp.FormData()
        form.add_field("List-Unsubscribe", "One-Click")  # as some mail clients send it: multipart/form-data
        form.add_field("x", "y", filename="f.txt")  # a file field makes aiohttp write multipart
        async with d.http.post(unsubscribe, data=form) as response:
            assert response.status == 200
        await d.engine.run_until_idle()
        assert await d.events(run_id) == ["email.unsubscribed"]
