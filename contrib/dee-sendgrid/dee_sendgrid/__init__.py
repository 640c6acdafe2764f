"""dee-sendgrid: email through SendGrid's v3 Mail Send API, as a DEE plugin.

Install it next to DEE (`pip install dee-sendgrid`), then select it and give it its key::

    [channels.email]
    adapter = "sendgrid"

    [plugins.dee_sendgrid]
    api_key_file = "/run/secrets/sendgrid"   # or api_key, or DEE_PLUGINS_DEE_SENDGRID_API_KEY

SendGrid's event webhook (delivered, bounce, open, click, spam report, unsubscribe) is taken by
DEE's ingress at `POST /webhooks/sendgrid` once `[ingress] sendgrid_public_key` is set; every
message this adapter sends carries the `dee_message_id` custom argument that the webhook's
events echo, which is how an event finds its run.
"""

from __future__ import annotations

from typing import Any

from dee.plugin import hookimpl
from dee_sendgrid.adapter import SendGridAdapter
from dee_sendgrid.settings import SendGridSettings, load_settings

__all__ = ["SendGridAdapter", "SendGridSettings", "dee_channel_adapters", "load_settings"]


@hookimpl
def dee_channel_adapters(config: Any) -> list[Any]:
    """The adapter, built from `[plugins.dee_sendgrid]`; its settings are checked only when the
    deployment selects it (an installed but unused plugin needs no key)."""
    if config.channels.email.adapter != SendGridAdapter.name:
        return [SendGridAdapter.unselected()]
    return [SendGridAdapter(config, load_settings(config.plugins.section("dee_sendgrid")))]
