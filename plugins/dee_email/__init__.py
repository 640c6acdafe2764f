"""Built-in email channel: the `sendEmail` step type, a deterministic simulated adapter and
the `smtp` adapter (real mail)."""

from __future__ import annotations

from typing import Any

import msgspec

from dee.kernel.context import StepContext
from dee.kernel.inputs import ChannelResult
from dee.kernel.outcomes import Done, Fail, Finish, Send, StepOutcome
from dee.plan.model import Tracking
from dee.plugin import hookimpl
from dee.plugin.contracts import StepType, TemplateStore, check_template, link_token, render_template
from dee.plugin.ledger import ledger_for
from dee_email.render import add_tracking, content_hash, render_subject, template_variables
from dee_email.simulated import SimulatedEmailAdapter
from dee_email.smtp import SmtpAdapter

DEFAULT_SETTINGS = {"tracking_domain": "t.dee.local", "unsubscribe_base": "https://t.dee.local/u"}
DEFAULT_TOKEN_TTL_TICKS = 365 * 86_400  # a year of one-second ticks, when the settings name none


class SendEmailParams(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    template_id: str
    subject: str
    reply_to: str | None = None
    tracking: Tracking | None = None


class SendEmailStep(StepType):
    """Renders a template and dispatches it on the `email` channel."""

    name = "sendEmail"
    params_type = SendEmailParams
    channel = "email"

    def check(self, params: SendEmailParams, templates: TemplateStore) -> list[str]:
        """The template exists and every part of it parses (a broken template is a plan
        problem when the plan is created, not a failure of some run later)."""
        template = templates.get("email", params.template_id)
        if template is None:
            return [f"unknown email template {params.template_id!r}"]
        where = f"template {params.template_id}"
        parts = [(params.subject, f"subject of {where}", False), (template.get("text", ""), f"{where} text", False)]
        if template.get("html"):
            parts.append((template["html"], f"{where} html", True))
        return [p for source, what, html in parts if (p := check_template(str(source), what, html)) is not None]

    def enter(self, ctx: StepContext, params: SendEmailParams) -> StepOutcome:
        if not ctx.contact.email:
            return Fail("contact has no email address")
        if ctx.contact.bounced:  # a hard bounce is contact-level: no run mails the address again
            return Finish("undeliverable")
        template = ctx.templates.get("email", params.template_id)
        if template is None:
            return Fail(f"unknown email template {params.template_id!r}")
        settings = {**DEFAULT_SETTINGS, **ctx.settings.get("email", {})}
        key = str(settings.get("signing_key") or "").encode()
        expires = ctx.step_tick + int(settings.get("token_ttl_ticks") or DEFAULT_TOKEN_TTL_TICKS)

        def token(kind: str, url: str = "") -> str:
            return link_token(key, kind, ctx.run_id, ctx.step_id, ctx.contact.id, expires, url)

        unsubscribe_url = f"{settings['unsubscribe_base']}/{token('u')}"
        variables = template_variables(ctx, unsubscribe_url)
        where = f"template {params.template_id}"
        subject = render_subject(params.subject, variables, f"{where} subject")
        text = render_template(template.get("text", ""), variables, f"{where} text")
        html = render_template(template["html"], variables, f"{where} html", html=True) if template.get("html") else None
        tracking = params.tracking or Tracking()
        if html is not None:
            html = add_tracking(html, token, settings["tracking_domain"], tracking.opens, tracking.clicks, unsubscribe_url)
        sender = settings.get("sender", {})
        message: dict[str, Any] = {
            "to": ctx.contact.email,
            "from": sender.get("email"),
            "replyTo": params.reply_to,
            "subject": subject,
            "text": text,
            "html": html,
            "templateId": params.template_id,
            "headers": {
                "Message-ID": ctx.message_id,
                "List-Unsubscribe": f"<{unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                **provider_tags(settings.get("provider_tags") or (), ctx.message_id),
            },
        }
        return Send("email", message, content_hash(message))

    def on_result(self, ctx: StepContext, params: SendEmailParams, result: ChannelResult) -> StepOutcome:
        return Done("delivered")


def provider_tags(providers: Any, message_id: str) -> dict[str, str]:
    """Headers that make a provider echo the Message-ID in every webhook event: SendGrid's and
    Postmark's opens, clicks and spam reports carry no Message-ID of their own, so without the
    tag the ingress could not tell which run they are about."""
    tags: dict[str, str] = {}
    if "sendgrid" in providers:
        tags["X-SMTPAPI"] = msgspec.json.encode({"unique_args": {"dee_message_id": message_id}}).decode()
    if "postmark" in providers:
        tags["X-PM-Metadata-dee_message_id"] = message_id
    return tags


@hookimpl
def dee_step_types() -> list[StepType]:
    return [SendEmailStep()]


@hookimpl
def dee_channel_adapters(config: Any) -> list[Any]:
    return [SimulatedEmailAdapter(ledger_for(config, "email")), SmtpAdapter(config)]
