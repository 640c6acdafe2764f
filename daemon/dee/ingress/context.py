"""What every ingress handler shares: the engine, the verifiers of the configured providers and
the plugins' webhook receivers,
the deliverer, and the few rules of answering (a page, 503 while the engine cannot accept)."""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from dee.config import EngineConfig, IngressConfig
from dee.engine import Engine
from dee.errors import ConfigError, EngineUnavailableError, ServiceUnavailableError
from dee.ingress import signatures
from dee.ingress.deliver import Deliverer, Delivery, Outcome
from dee.metrics import Metrics

log = logging.getLogger("dee.ingress")
RETRY_AFTER_S = "5"


class Ingress:
    """The ingress of one process. `clock` gives Unix seconds (signature freshness); tests pass
    a fixed one to check published test vectors."""

    def __init__(
        self, engine: Engine, config: EngineConfig, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:  # fmt: skip
        self.engine = engine
        self.config = config
        self.settings: IngressConfig = config.ingress
        self.metrics = metrics
        self.clock = clock
        self.deliverer = Deliverer(engine, metrics)
        self.verifiers = verifiers(config)
        self.receivers = engine.plugins.webhook_receivers(config)  # plugins' providers, by route name
        # inbound mail is parsed here, off the event loop (its work is bounded, not negligible)
        self.parsers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dee-inbound-mail")

    def close(self) -> None:
        self.parsers.shutdown(wait=False, cancel_futures=True)

    async def deliver(self, items: Sequence[Delivery]) -> Outcome:
        """Deliver, or answer 503 (with Retry-After) when the engine cannot accept now."""
        try:
            return await self.deliverer.deliver(items)
        except (EngineUnavailableError, ServiceUnavailableError) as exc:
            log.warning("an event could not be accepted now: %s", exc)
            raise web.HTTPServiceUnavailable(text="try again later\n", headers={"Retry-After": RETRY_AFTER_S}) from None

    def public_url(self, request: web.Request) -> str:
        """The URL the caller requested (and a provider signed): the public base, then the path
        and query byte for byte as they arrived. Not `request.rel_url`, which decodes the query
        (`%3C` becomes `<`): a URL that differs by one escape is another URL to a signature."""
        return self.settings.public_url.rstrip("/") + request.raw_path


INGRESS = web.AppKey("ingress", Ingress)


def verifiers(config: EngineConfig) -> dict[str, signatures.Verifier]:
    """A verifier for each provider whose secret is configured (only those routes answer)."""
    try:
        return _verifiers(config)
    except ValueError as exc:  # a key or certificate that is not one
        raise ConfigError(f"ingress: {exc}") from None


def _verifiers(config: EngineConfig) -> dict[str, signatures.Verifier]:
    s = config.ingress
    found: dict[str, signatures.Verifier] = {}
    if s.sendgrid_public_key:
        found["sendgrid"] = signatures.SendGridVerifier(s.sendgrid_public_key)
    if s.mailgun_signing_key:
        found["mailgun"] = signatures.MailgunVerifier(s.mailgun_signing_key)
    if s.ses_certificates:
        found["ses"] = signatures.SnsVerifier(_read_pems(s.ses_certificates), topic_arns=s.ses_topic_arns)
    if s.postmark_username and s.postmark_password:
        found["postmark"] = signatures.PostmarkVerifier(s.postmark_username, s.postmark_password)
    if s.standard_webhooks_secret:
        found["standard"] = signatures.StandardWebhooksVerifier(s.standard_webhooks_secret)
    if config.channels.voice.auth_token:
        found["twilio"] = signatures.TwilioVerifier(config.channels.voice.auth_token)
    return found


def _read_pems(paths: Sequence[str]) -> list[str]:
    pems = []
    for path in paths:
        try:
            with open(path, encoding="ascii") as f:
                pems.append(f.read())
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"ingress.ses_certificates: cannot read {path}: {exc}") from None
    return pems


def page(title: str, body: str) -> str:
    """A small self-contained HTML page (no scripts, nothing fetched from elsewhere)."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width"><title>{html.escape(title)}</title></head>'
            f'<body style="font-family:sans-serif;max-width:32em;margin:4em auto">{body}</body></html>')  # fmt: skip

