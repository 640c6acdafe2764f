"""The hooks a DEE plugin implements. These docstrings are the plugin author's documentation.

A plugin is any importable module or object registered under the `dee` entry-point group::

    [project.entry-points.dee]
    dee_sendgrid = "dee_sendgrid"

and implementing one or more of the hooks below with `@dee.plugin.hookimpl`. Every hook that
provides something returns a list; DEE collects the lists of all plugins and checks every item
(a wrong type is refused at start-up with the plugin's name). Names must be unique across
plugins: two plugins registering the same step type, adapter or template store name stop
start-up. A hook that raises stops start-up too, naming the plugin: DEE fails closed rather
than run without a piece a plan needs.

`config` is the deployment's `dee.EngineConfig`, the same one the daemon runs with (`dee
plugins` asks with it too). A plugin's own settings are its table in `dee.toml`::

    [plugins.dee_sendgrid]
    api_key_file = "/run/secrets/sendgrid"

read with `config.plugins.section("dee_sendgrid")` (a dict, empty when the table is absent;
`DEE_PLUGINS_DEE_SENDGRID_API_KEY_FILE` sets a key from the environment). Convert and check it
in the hook (a `msgspec.Struct` with `forbid_unknown_fields` does both) and raise on a bad
value: start-up stops naming your plugin. Keys naming a secret (`*key*`, `*secret*`,
`*password*`, `*token*`) are masked whenever the configuration is printed. Channel settings
that step types see are `config.channels.email` and `config.channels.voice`. Read the config in
the hook, keep what you need; never change it.
"""

from __future__ import annotations

from typing import Any

import pluggy

from dee.config import EngineConfig
from dee.plugin.contracts import ChannelAdapter, PolicyGate, StepType, TemplateStore, WebhookReceiver

hookspec = pluggy.HookspecMarker("dee")


@hookspec
def dee_step_types() -> list[StepType]:
    """Return step types (subclasses of `dee.plugin.contracts.StepType`, instantiated).

    A step type runs inside the pure kernel: it decides only from the `StepContext` and its
    params and returns a `StepOutcome` (`Done`, `Sleep`, `Send`, `Finish`, `Fail`). No clock,
    no I/O, no randomness: anything else breaks replay. Its `name` is the `type` plans use.
    """


@hookspec
def dee_channel_adapters(config: EngineConfig) -> list[ChannelAdapter]:
    """Return channel adapters (objects with `name`, `channel` and `async send(request) ->
    DispatchResponse`, see `dee.plugin.contracts.ChannelAdapter`) built from `config`.

    The deployment selects one adapter per channel by name (`channels.email.adapter = "smtp"`).
    An adapter runs in the shell and may do I/O, but must not send twice for one idempotency
    key: a repeated key gets the first answer. It should not raise: a raised exception is
    recorded as a transient failure of the send and retried by the kernel.
    """


@hookspec
def dee_policy_gates(config: EngineConfig) -> list[PolicyGate]:
    """Return policy gates (subclasses of `dee.plugin.contracts.PolicyGate` with a `name` and
    `check(request) -> Verdict`) built from `config`.

    The kernel asks every gate before every send and call, and before every resend after a
    failure, with a `GateRequest`: the run, the step, its channel, the tick, the attempt, the
    contact, and the contact's `PolicyFacts` (its latest consent per channel, its
    channel-level suppressions) as of that tick. The answer is a `Verdict`:

    - `Verdict.allow()`: send;
    - `Verdict.defer(until_tick, reason)`: the run waits (status `waiting`) and the gates are
      asked again at `until_tick` (a window that opens later: calling hours);
    - `Verdict.skip(reason)`: the step is recorded as `step.skipped` and the run goes on;
    - `Verdict.pause(reason)`: the run is paused; once resumed, the gates are asked again;
    - `Verdict.fail(reason)`: the run fails.

    The strictest verdict of all gates stands (fail, pause, skip, defer, allow). Each decision is
    journaled as a `policy.evaluated` entry with every gate's verdict, reason and `facts`, and
    the step's result carries the verdict, which replay compares. A gate runs inside the pure
    kernel: decide from the request and the gate's configuration only (no clock, no I/O, no
    randomness), or replay will not reach the same verdict. A gate that raises fails the step.
    Gates are asked in registration order; names must be unique.
    """


@hookspec
def dee_template_stores(config: EngineConfig) -> list[TemplateStore]:
    """Return template stores (objects with `name`, `get(kind, id)` and `ids(kind)`, see
    `dee.plugin.contracts.TemplateStore`) that resolve email templates (`kind="email"`), call
    scripts (`"voice"`) and voicemail messages (`"voicemail"`) by id.

    They are asked after the project's own `templates/` and `scripts/`, in registration order;
    the first that knows an id answers. Lookups must be pure for a given content: replay renders
    with the current store, which is how an edited template shows up as a content-hash diff.
    """


@hookspec
def dee_webhook_receivers(config: EngineConfig) -> list[WebhookReceiver]:
    """Return webhook receivers (objects with `name`, `verify(headers, body, url, now)` and
    `events(headers, body)`, see `dee.plugin.contracts.WebhookReceiver`) built from `config`:
    how the ingress hears a provider it does not know of itself.

    Each answers at `POST /webhooks/{name}` (a name of lowercase letters, digits and `-`, not one
    of the built-in providers: sendgrid, mailgun, ses, postmark, standard, twilio). The ingress
    reads the body (bounded by `[ingress] max_body_bytes`), calls `verify`, then `events`, and
    delivers each event as the built-in providers' are: matched to the run by the email's
    Message-ID (or the tag `dee_message_id` that the adapter set and the provider echoes),
    deduplicated by (name, `provider_event_id`). A `SignatureError` is answered 403 and records
    nothing; a `PayloadError` 400; anything else a receiver raises or returns (an event that is
    not an `InboundEvent` of a known type) is the receiver's bug: 500, logged with the receiver's
    name, and the provider retries later. An event about mail this deployment did not send is
    ignored with a 2xx.
    """


@hookspec
def dee_startup(engine: Any) -> None:
    """Called once when an engine (a `dee.Engine`) has started, after its storage answers: open
    connections your adapters hold here."""


@hookspec
def dee_shutdown(engine: Any) -> None:
    """Called once when an engine stops, before its storage closes: close what `dee_startup`
    opened."""
