"""Built-in email channel: the `sendEmail` step type and a deterministic simulated adapter."""

from __future__ import annotations

from typing import Any

import msgspec

from dee.kernel.context import StepContext
from dee.kernel.inputs import ChannelResult
from dee.kernel.outcomes import Done, Fail, Send, StepOutcome
from dee.plan.model import Tracking
from dee.plugin import hookimpl
from dee.plugin.contracts import StepType, TemplateStore
from dee.plugin.ledger import ledger_for
from dee_email.render import add_tracking, content_hash, render_text, template_variables
from dee_email.simulated import SimulatedEmailAdapter

DEFAULT_SETTINGS = {"tracking_domain": "t.dee.local", "unsubscribe_base": "https://u.dee.local/unsubscribe"}


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
        if templates.get("email", params.template_id) is None:
            return [f"unknown email template {params.template_id!r}"]
        return []

    def enter(self, ctx: StepContext, params: SendEmailParams) -> StepOutcome:
        if not ctx.contact.email:
            return Fail("contact has no email address")
        template = ctx.templates.get("email", params.template_id)
        if template is None:
            return Fail(f"unknown email template {params.template_id!r}")
        settings = {**DEFAULT_SETTINGS, **ctx.settings.get("email", {})}
        token = ctx.idempotency_key[:32]
        unsubscribe_url = f"{settings['unsubscribe_base']}/{token}"
        variables = template_variables(ctx, unsubscribe_url)
        where = f"template {params.template_id}"
        subject = render_text(params.subject, variables, f"{where} subject")
        text = render_text(template.get("text", ""), variables, f"{where} text")
        html = render_text(template["html"], variables, f"{where} html") if template.get("html") else None
        tracking = params.tracking or Tracking()
        if html is not None:
            html = add_tracking(html, token, settings["tracking_domain"], tracking.opens, tracking.clicks)
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
            },
        }
        return Send("email", message, content_hash(message))

    def on_result(self, ctx: StepContext, params: SendEmailParams, result: ChannelResult) -> StepOutcome:
        return Done("delivered")


@hookimpl
def dee_step_types() -> list[StepType]:
    return [SendEmailStep()]


@hookimpl
def dee_channel_adapters(config: Any) -> list[Any]:
    return [SimulatedEmailAdapter(ledger_for(config, "email"))]
