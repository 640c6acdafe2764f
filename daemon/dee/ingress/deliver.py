"""From a verified request to wire events: deterministic event ids, the run a Message-ID names
and its contact, and the wait for the daemon's durable answer.

An event's id is derived from what identifies the happening (the provider's own event id, the
token of a link and what was done with it, an inbound message's Message-ID), keyed with the
deployment's link key: a redelivered webhook or a reloaded pixel is the same event and is
applied once, and a publisher who can write to the bus but does not hold the key cannot claim
an id first to have the real event refused as a reused command id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import msgspec

from dee.engine import Engine
from dee.errors import CommandIdReusedError, RunNotFoundError
from dee.kernel.idempotency import RUN_ID, run_of_message
from dee.metrics import Metrics

MAX_REMEMBERED = 100_000  # runs' contacts (what a run belongs to never changes), and event ids delivered



class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One event to hand to the engine."""

    type: str
    identity: tuple[str, ...]  # what makes it this event and no other (hashed into its id)
    contact_id: str | None = None  # None: the run's contact, looked up
    run_id: str | None = None
    step_id: str | None = None
    message_id: str | None = None
    data: dict[str, Any] = {}
    occurred_at: str | None = None


class Outcome(msgspec.Struct, frozen=True):
    accepted: int
    ignored: int


class Deliverer:
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self._contacts: OrderedDict[str, str | None] = OrderedDict()
        self._delivered: OrderedDict[str, None] = OrderedDict()  # event ids accepted lately: not sent again

    def event_id(self, identity: Sequence[str]) -> str:
        key = self.engine.link_keys[0]
        digest = hmac.new(key, b"\x1f".join(part.encode() for part in identity), hashlib.sha256).hexdigest()
        return f"ingress-{digest[:40]}"

    async def contact_of(self, run_id: str) -> str | None:
        """The contact of a run (None: no such run); looked up once per run and kept."""
        if run_id in self._contacts:
            self._contacts.move_to_end(run_id)
            return self._contacts[run_id]
        try:
            contact: str | None = (await self.engine.get_run(run_id)).contact_id
        except RunNotFoundError:
            contact = None
        self._contacts[run_id] = contact
        if len(self._contacts) > MAX_REMEMBERED:
            self._contacts.popitem(last=False)
        return contact

    async def _resolve(self, item: Delivery) -> Delivery | None:
        """The delivery with its run and contact, or None when it concerns no run of ours."""
        run_id = item.run_id or (run_of_message(item.message_id) if item.message_id else None)
        if item.contact_id is not None:
            return msgspec.structs.replace(item, run_id=run_id)
        if run_id is None or not RUN_ID.fullmatch(run_id):
            return None
        contact = await self.contact_of(run_id)
        return None if contact is None else msgspec.structs.replace(item, run_id=run_id, contact_id=contact)

    async def deliver(self, items: Sequence[Delivery]) -> Outcome:
        """Hand every event to its partition and wait until each is durably accepted. An event
        for a run the engine does not know is ignored (a provider's webhook for mail sent by
        another system). `EngineUnavailableError` and `ServiceUnavailableError` propagate: the
        caller answers 503 and the sender retries, which the event ids make safe."""
        resolved = await asyncio.gather(*(self._resolve(item) for item in items))
        wanted = [item for item in resolved if item is not None]
        outcomes = await asyncio.gather(*(self._one(item) for item in wanted), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, RunNotFoundError)]
        if failures:
            raise failures[0]
        accepted = sum(1 for o in outcomes if o is True)
        return Outcome(accepted, len(items) - accepted)

    async def _one(self, item: Delivery) -> bool:
        assert item.contact_id is not None
        event_id = self.event_id((item.type, *item.identity))
        if event_id in self._delivered:  # a reloaded pixel, a second click: nothing new to say
            self._delivered.move_to_end(event_id)
            return True
        try:
            await self.engine.ingest_event(
                item.type, item.contact_id, item.data, occurred_at=item.occurred_at, run_id=item.run_id,
                step_id=item.step_id, event_id=event_id, message_id=item.message_id,
            )  # fmt: skip
        except CommandIdReusedError:
            # an id only this deployment can make, taken: the same happening delivered again at
            # another moment (through another ingress process); its first delivery stands
            pass
        self._delivered[event_id] = None
        if len(self._delivered) > MAX_REMEMBERED:
            self._delivered.popitem(last=False)
        self.metrics.ingress_events.labels(item.type).inc()
        return True

