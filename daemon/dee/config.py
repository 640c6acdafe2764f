"""Engine configuration: msgspec Structs, loadable from TOML with environment overrides.

`EngineConfig.load("dee.toml")` reads the file, then applies `DATABASE_URL`, `REDIS_URL` and
`DEE_<SECTION>_<FIELD>` variables (e.g. `DEE_SCHEDULER_TICK_INTERVAL_MS=500`,
`DEE_SCHEDULER_CLOCK=manual`, `DEE_CHANNELS_EMAIL_ADAPTER=smtp`). Unknown keys are errors:
a typo in a config file must not silently fall back to a default. Without a path, `load` reads
`$DEE_CONFIG`, else the `dee.toml` of the project it finds (`dee.project.find_project`).

`config_dir`, the project directory with `plans/`, `templates/` and `scripts/`, is resolved
against the folder of the file that sets it, and defaults to that folder: a project's
`dee.toml` sits at its root.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from datetime import datetime, time
from pathlib import Path
from typing import Any, ClassVar, Literal

import msgspec

from dee.errors import ConfigError
from dee.limits.settings import BudgetsConfig, DeliverabilityConfig

SECRET_FIELDS = (
    "smtp_password", "auth_token", "signing_key", "previous_keys", "mailgun_signing_key", "postmark_password",
    "standard_webhooks_secret", "inbound_mail_secret", "s3_access_key_id", "s3_secret_access_key",
)  # fmt: skip  # never shown: repr prints *** for them


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    def __repr__(self) -> str:
        """The fields, a secret's value replaced by `***` (a config in an error or a log line
        must not carry a password)."""
        shown = ", ".join(
            f"{f}={'***' if f in SECRET_FIELDS and getattr(self, f) else repr(getattr(self, f))}"
            for f in self.__struct_fields__
        )
        return f"{type(self).__name__}({shown})"

    __str__ = __repr__


class SchedulerConfig(_Section, frozen=True):
    tick_interval_ms: int = 1000
    max_runs_per_tick: int = 500
    partitions: int = 16
    partition_key: str | None = None
    clock: Literal["wall", "manual"] = "wall"
    lease_ttl_ms: int = 10_000
    # tick 0 as an ISO 8601 UTC time, fixed at the first migrate: unset, the moment of that migrate
    # for a wall clock, and MANUAL_EPOCH for a manual one (simulated time is then the same every run)
    epoch: str | None = None

    def epoch_ms(self, now_ms: int) -> int:
        """The epoch a new deployment gets (`now_ms`: the moment of its first migrate)."""
        if self.epoch is not None:
            return parse_epoch(self.epoch)
        return parse_epoch(MANUAL_EPOCH) if self.clock == "manual" else now_ms


MANUAL_EPOCH = "2026-01-05T12:00:00Z"  # a Monday noon UTC: simulated calls fall inside calling hours


def parse_epoch(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"scheduler.epoch: an ISO 8601 time such as {MANUAL_EPOCH} ({exc})") from None
    if moment.tzinfo is None:
        raise ConfigError(f"scheduler.epoch: give the time zone (UTC: {MANUAL_EPOCH})")
    return int(moment.timestamp() * 1000)


class SenderConfig(_Section, frozen=True):
    email: str = "outreach@example.com"
    name: str = "DEE"


class EmailChannelConfig(_Section, frozen=True):
    adapter: str = "simulated"
    sender: SenderConfig = SenderConfig()
    tracking_domain: str = "t.dee.local"
    unsubscribe_base: str = "https://t.dee.local/u"  # the ingress's /u/{token}
    # the `smtp` adapter: a server (a local sink such as Mailpit by default), its credentials,
    # how the connection is secured ("none", "starttls" or implicit "tls"), a bound on every
    # exchange, and how many connections it keeps open at once
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout_ms: int = 10_000
    smtp_pool_size: int = 4
    smtp_ca_file: str | None = None  # a CA bundle to trust besides the system's (a private mail relay)
    # sends handed to the adapter at once by one dispatcher process (the rest wait their turn)
    max_in_flight: int = 16


class VoiceChannelConfig(_Section, frozen=True):
    adapter: str = "simulated"
    caller_id: str = "+15550000000"
    # the `twilio` adapter: the REST API's base URL (Twilio's, or a compatible provider's), the
    # account and its token, and where the provider sends the call's status callbacks (the
    # ingress's /voice/twilio/status); `gather_url` receives keypad choices of call scripts
    api_url: str | None = None
    account_sid: str | None = None
    auth_token: str | None = None
    status_callback_url: str | None = None
    gather_url: str | None = None
    http_timeout_ms: int = 10_000
    # how long a placed call's step waits for its final status before it fails
    status_timeout_ms: int = 3_600_000
    max_in_flight: int = 8
    # calls are allowed from the first to the second time, in the contact's time zone (what the
    # compliance report checks every call against)
    calling_hours: tuple[str, str] = ("08:00", "21:00")

    def __post_init__(self) -> None:
        try:
            start, end = (time.fromisoformat(t) for t in self.calling_hours)
        except ValueError as exc:
            raise ValueError(f"channels.voice.calling_hours: times as HH:MM ({exc})") from None
        if not start < end:
            raise ValueError("channels.voice.calling_hours: the first time must be before the second")


class ChannelsConfig(_Section, frozen=True):
    email: EmailChannelConfig = EmailChannelConfig()
    voice: VoiceChannelConfig = VoiceChannelConfig()


class AuditConfig(_Section, frozen=True):
    """Retention of the audit log (`dee audit archive`): the log is partitioned by the start of
    each run, `partition_days` of run starts a partition (fixed at the first migrate that
    partitions it); a partition past `retention_days` whose runs all ended is written to
    `archive_to` (`s3://bucket/prefix`), read back and verified, then dropped. Unset
    `retention_days`: nothing is ever dropped. The S3 settings left unset come from the
    standard AWS variables and files (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, a profile, ...).

    Signed checkpoints (`dee audit checkpoint`): `signing_key_file` is an Ed25519 private key
    (PEM or 32 raw bytes) that signs them; `checkpoint_interval_s` > 0 has the daemons take one
    that often (one daemon at a time), 0 leaves it to the command."""

    retention_days: int | None = None
    archive_to: str | None = None
    partition_days: int = 30
    s3_endpoint_url: str | None = None  # an S3-compatible service (MinIO, Ceph, ...); unset: AWS
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    signing_key_file: str | None = None
    checkpoint_interval_s: int = 0

    def __post_init__(self) -> None:
        if self.checkpoint_interval_s < 0:
            raise ValueError("audit.checkpoint_interval_s: 0 (off) or more seconds")
        if self.checkpoint_interval_s and self.signing_key_file is None:
            raise ValueError("audit.checkpoint_interval_s needs audit.signing_key_file (the key that signs the checkpoints)")
        if self.retention_days is not None and self.retention_days < 1:
            raise ValueError("audit.retention_days: at least 1 (unset keeps the audit log in full)")
        if self.partition_days < 1:
            raise ValueError("audit.partition_days: at least 1")
        if self.archive_to is not None:
            bucket = self.archive_to.removeprefix("s3://").split("/", 1)[0]
            if not self.archive_to.startswith("s3://") or not bucket:
                raise ValueError(f"audit.archive_to: an S3 URI such as s3://bucket/prefix, not {self.archive_to!r}")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("audit.s3_access_key_id and audit.s3_secret_access_key go together")


class PrivacyConfig(_Section, frozen=True):
    """Contact data in audit entries is sealed with a key of the contact's own (AES-256-GCM),
    each key wrapped by the master key: in `master_key_file` (made there, mode 0600, when absent;
    relative to the config file's folder), or, unset, kept in the database. `key_cache`: the
    unwrapped keys a partition (or a reader) keeps at most."""

    encrypt_contact_data: bool = True
    master_key_file: str | None = None
    key_cache: int = 10_000

    def __post_init__(self) -> None:
        if self.key_cache < 0:
            raise ValueError("privacy.key_cache: zero or more keys")


class BusConfig(_Section, frozen=True):
    """`dedupe_days`: how long an accepted message's id is remembered (the `received` table), so
    that a publisher's retry of it is answered and not applied again; `dee audit archive` forgets
    older ids. Keep it longer than any publisher or webhook provider retries a message."""

    dedupe_days: int = 30

    def __post_init__(self) -> None:
        if self.dedupe_days < 7:
            raise ValueError("bus.dedupe_days: at least 7 (a publisher may retry a message for days)")


class PolicyConfig(_Section, frozen=True):
    """The built-in gates of the `dee_policy` plugin (disable it in `[plugins] disabled` to run
    without them). `consent_required`: channels a send on needs granted consent (voice: the
    TCPA's prior express consent); on any channel a revoked consent refuses the send.
    `on_consent_missing` and `on_suppressed`: what a refused send does to its run (`skip` the
    step and go on, `pause` the run, `fail` it)."""

    consent_required: tuple[str, ...] = ("voice",)
    on_consent_missing: Literal["skip", "pause", "fail"] = "skip"
    on_suppressed: Literal["skip", "pause", "fail"] = "skip"
    # calling hours: a call rings only inside channels.voice.calling_hours of the contact's local
    # day, on these weekdays, not on the public holidays of `holidays` (a country, or country-region:
    # "US", "US-CA", "DE-BY"); outside, it waits for the next opening. A contact's zone is its own,
    # else its phone region's (every zone of it), else `default_timezone`.
    calling_hours: bool = True
    calling_days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    holidays: str | None = None
    default_timezone: str = "UTC"
    # quiet hours for email, off unless set: emails go out only inside this window of the contact's
    # local day (["09:00", "18:00"]), on `send_days`, not on `holidays`
    send_window: tuple[str, str] | None = None
    send_days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    # frequency caps across every run of a contact, "<channel> <count>/<period>": per `day` or
    # `week` of the contact's local calendar, or per rolling window (`24h`, `7d`, `90m`); a send
    # over a cap waits until the cap allows it (`defer`) or is skipped
    caps: tuple[str, ...] = ()
    on_capped: Literal["defer", "skip"] = "defer"
    # overrides of these keys for one plan: [policy.plans.<plan id>]
    plans: dict[str, dict[str, Any]] = {}
    deliverability: DeliverabilityConfig = DeliverabilityConfig()  # email limits, enforced by the dispatcher
    budgets: BudgetsConfig = BudgetsConfig()  # what sends may cost, enforced by the dispatcher

    def __post_init__(self) -> None:
        for cap in self.caps:
            FrequencyCap.parse(cap)
        for plan_id in self.plans:
            self.for_plan(plan_id)

    def frequency_caps(self) -> tuple[FrequencyCap, ...]:
        return tuple(FrequencyCap.parse(text) for text in self.caps)

    def for_plan(self, plan_id: str) -> PolicyConfig:
        """This policy with the plan's overrides (the policy itself for a plan without any)."""
        override = self.plans.get(plan_id)
        if not override:
            return self
        if "plans" in override:
            raise ValueError(f"policy.plans.{plan_id}: a plan's overrides cannot hold plans")
        base = {k: v for k, v in msgspec.to_builtins(self).items() if k != "plans"}
        try:
            return msgspec.convert({**base, **override}, PolicyConfig)
        except msgspec.ValidationError as exc:
            raise ValueError(f"policy.plans.{plan_id}: {exc}") from None


class FrequencyCap(msgspec.Struct, frozen=True):
    """One cap of `[policy] caps`: at most `count` messages on `channel` per local calendar
    `period` (`day`, `week`) or per rolling `window_ms`."""

    text: str
    channel: str
    count: int
    period: Literal["day", "week"] | None = None
    window_ms: int | None = None

    UNITS: ClassVar[dict[str, int]] = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

    @classmethod
    def parse(cls, text: str) -> FrequencyCap:
        channel, _, rule = text.strip().partition(" ")
        count, slash, period = rule.strip().partition("/")
        if not channel or not slash or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"policy.caps: {text!r} is not '<channel> <count>/<period>' (e.g. 'voice 1/day', 'email 3/7d')")
        period = period.strip()
        if period in ("day", "week"):
            return cls(text, channel, int(count), period=period)  # type: ignore[arg-type]
        amount, unit = period[:-1], period[-1:]
        if not amount.isdigit() or int(amount) < 1 or unit not in cls.UNITS:
            raise ValueError(f"policy.caps: {text!r}: the period is day, week or a window like 90m, 24h, 7d, 2w")
        return cls(text, channel, int(count), window_ms=int(amount) * cls.UNITS[unit])


class IngressConfig(_Section, frozen=True):
    """The HTTP ingress (`dee ingress`, or inside `dee run` when `enabled`): where it listens,
    the public URL its links and callbacks use, the key link tokens are signed with (and older
    keys still accepted, newest first), how long a link works, and what it accepts at most."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    signing_key: str | None = None
    previous_keys: tuple[str, ...] = ()
    token_ttl_days: int = 365
    max_body_bytes: int = 1_048_576
    max_mail_bytes: int = 10_485_760
    max_connections: int = 1024
    request_timeout_ms: int = 10_000
    keepalive_timeout_ms: int = 15_000
    # providers' webhooks: each is served only when its secret is configured
    sendgrid_public_key: str | None = None
    mailgun_signing_key: str | None = None
    ses_certificates: tuple[str, ...] = ()  # PEM files of SNS signing certificates to trust
    ses_topic_arns: tuple[str, ...] = ()
    postmark_username: str | None = None
    postmark_password: str | None = None
    standard_webhooks_secret: str | None = None
    inbound_mail_secret: str | None = None  # basic-auth password of POST /inbound/email

    def link_keys(self) -> tuple[bytes, ...]:
        """The keys a link token may be signed with, the current one first."""
        return tuple(k.encode() for k in (self.signing_key, *self.previous_keys) if k)


class ClientConfig(_Section, frozen=True):
    """How long an Engine waits: for a daemon's reply to a write, and in `run_until_idle`."""

    reply_timeout_ms: int = 15_000
    idle_timeout_ms: int = 120_000


class MetricsConfig(_Section, frozen=True):
    enabled: bool = True
    host: str = "127.0.0.1"  # the container image listens on every address (DEE_METRICS_HOST)
    port: int = 9464


class LogConfig(_Section, frozen=True):
    """`level`: debug, info, warning or error (None: info for `dee run`, warning for the other
    commands); `format`: `text` lines or `json` objects, one per record."""

    level: str | None = None
    format: Literal["text", "json"] = "text"

    def __post_init__(self) -> None:
        if self.level is not None and self.level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"log.level: debug, info, warning or error, not {self.level!r}")


class PluginsConfig(_Section, frozen=True):
    disabled: tuple[str, ...] = ()
    # each plugin's own settings: the `[plugins.<name>]` tables of dee.toml, as they are written
    # (the plugin converts and checks its own); `section(name)` is how a plugin reads its table
    settings: dict[str, dict[str, Any]] = {}

    def section(self, name: str) -> dict[str, Any]:
        """The `[plugins.<name>]` table (empty when there is none)."""
        return dict(self.settings.get(name, {}))

    def __repr__(self) -> str:
        """Settings whose key names a secret (`*key*`, `*secret*`, `*password*`, `*token*`) show `***`."""
        shown = {name: {k: "***" if _SECRET_KEY.search(k) else v for k, v in table.items()}
                 for name, table in self.settings.items()}  # fmt: skip
        return f"PluginsConfig(disabled={self.disabled!r}, settings={shown!r})"

    __str__ = __repr__


_SECRET_KEY = re.compile(r"key|secret|password|token", re.IGNORECASE)


def plugin_tables(data: dict[str, Any]) -> None:
    """Move the `[plugins.<name>]` tables of a loaded file into `plugins.settings`; any other key
    of `[plugins]` but `disabled` is a mistake."""
    plugins = data.get("plugins")
    if not isinstance(plugins, dict):
        return
    tables = dict(plugins.get("settings") or {})
    for key in [k for k in plugins if k not in ("disabled", "settings")]:
        value = plugins.pop(key)
        if not isinstance(value, dict):
            raise ConfigError(f"plugins.{key} is not a table: a plugin's settings are a [plugins.{key}] table")
        tables[key] = {**tables.get(key, {}), **value}
    if tables:
        plugins["settings"] = tables


class EngineConfig(_Section, frozen=True):
    database: str = "postgresql://postgres@127.0.0.1:5432/dee"
    redis: str = "redis://127.0.0.1:6379/0"
    scheduler: SchedulerConfig = SchedulerConfig()
    channels: ChannelsConfig = ChannelsConfig()
    audit: AuditConfig = AuditConfig()
    bus: BusConfig = BusConfig()
    plugins: PluginsConfig = PluginsConfig()
    metrics: MetricsConfig = MetricsConfig()
    client: ClientConfig = ClientConfig()
    log: LogConfig = LogConfig()
    ingress: IngressConfig = IngressConfig()
    policy: PolicyConfig = PolicyConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    config_dir: str | None = None  # None: the project found from the working directory, if any
    namespace: str = "dee"
    message_domain: str = "dee.local"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> EngineConfig:
        """Read a TOML file and apply environment overrides. Without `path`: `$DEE_CONFIG`, else
        the found project's `dee.toml`, else only the built-in defaults and the environment."""
        env = os.environ if env is None else env
        if path is None:
            path = env.get("DEE_CONFIG") or None
        if path is None:
            project = find_project(env=env)
            path = project / CONFIG_FILE if project is not None and (project / CONFIG_FILE).is_file() else None
        data: dict[str, Any] = {}
        if path is not None:
            file = Path(path)
            try:
                data = tomllib.loads(file.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise ConfigError(f"{file}: no such configuration file") from None
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{file}: {exc}") from exc
            folder = file.parent
            data["config_dir"] = str(folder / data["config_dir"]) if isinstance(data.get("config_dir"), str) else str(folder)
            privacy = data.get("privacy")
            if isinstance(privacy, dict) and isinstance(privacy.get("master_key_file"), str):
                data["privacy"] = {**privacy, "master_key_file": str(folder / privacy["master_key_file"])}
        apply_env(data, env)
        return cls.from_dict(data)

    def project_dir(self) -> Path | None:
        """Where this deployment's plans, templates and scripts live: `config_dir`, which must
        be a directory, or (not set) the project found from the working directory, if any."""
        if self.config_dir is None:
            return find_project()
        folder = Path(self.config_dir)
        if not folder.is_dir():
            raise ConfigError(f"config_dir {folder}: no such directory (plans, templates and scripts live there)")
        return folder

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineConfig:
        data = dict(data)
        if isinstance(data.get("plugins"), dict):
            data["plugins"] = dict(data["plugins"])
            plugin_tables(data)
        try:
            return msgspec.convert(data, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid configuration: {exc}") from exc

    def with_link_key(self, key: str) -> EngineConfig:
        """This configuration with the deployment's own link key, unless one is configured."""
        if self.ingress.signing_key:
            return self
        return msgspec.structs.replace(self, ingress=msgspec.structs.replace(self.ingress, signing_key=key))

    def kernel_settings(self) -> dict[str, dict[str, Any]]:
        """The channel settings step types see (part of configuration, hence of replay)."""
        email = self.channels.email
        return {
            "email": {
                "sender": msgspec.to_builtins(email.sender),
                "tracking_domain": email.tracking_domain,
                "unsubscribe_base": email.unsubscribe_base,
                # link tokens: signed with the deployment's key (an unsigned token is accepted nowhere)
                "signing_key": self.ingress.signing_key or "",
                # providers whose webhooks the ingress takes: each message is tagged for them
                "provider_tags": [name for name, on in (("sendgrid", self.ingress.sendgrid_public_key),
                                                        ("postmark", self.ingress.postmark_username)) if on],
                "token_ttl_ticks": -(-self.ingress.token_ttl_days * 86_400_000 // self.scheduler.tick_interval_ms),
            },
            "voice": {
                "caller_id": self.channels.voice.caller_id, "gather_url": self.channels.voice.gather_url,
                "status_timeout_ms": self.channels.voice.status_timeout_ms,
            },
        }


CONFIG_FILE = "dee.toml"
SECTIONS = ("scheduler", "channels", "audit", "bus", "plugins", "metrics", "client", "log", "ingress")
ENV_ALIASES = {"DATABASE_URL": ("database",), "REDIS_URL": ("redis",), "DEE_SCHEDULER_TICK_MS": ("scheduler", "tick_interval_ms")}


def apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """Write `DEE_A_B_C=value` overrides into `data` (matching known sections greedily).

    Variables outside the configuration's sections (`DEE_TEST_PG`, ...) belong to someone else
    and are left alone; a variable inside a section that names no field is a typo and an error.
    """
    for name, value in sorted(env.items()):
        if name in ENV_ALIASES:
            _set(data, ENV_ALIASES[name], value)
        elif name.startswith("DEE_") and name not in ("DEE_CONFIG_DIR", "DEE_CONFIG"):
            parts = name[4:].lower().split("_")
            path = _resolve(parts, EngineConfig)
            if path is not None:
                _set(data, path, _split(value) if path in _list_fields(EngineConfig) else value)
            elif parts[0] == "plugins" and len(parts) >= 3:
                _set(data, _plugin_setting(data, parts[1:]), value)
            elif parts[0] in SECTIONS:
                raise ConfigError(f"environment variable {name} names no field of [{parts[0]}]")
        elif name == "DEE_CONFIG_DIR":
            _set(data, ("config_dir",), value)


def _plugin_setting(data: dict[str, Any], parts: list[str]) -> tuple[str, ...]:
    """Where `DEE_PLUGINS_<NAME>_<KEY>` goes: the longest `<NAME>` that has a `[plugins.<name>]`
    table in the file, else the first word (a plugin whose name holds `_` needs its table)."""
    found = data.get("plugins")
    tables: dict[str, Any] = found if isinstance(found, dict) else {}
    for cut in range(len(parts) - 1, 0, -1):
        name = "_".join(parts[:cut])
        if isinstance(tables.get(name), dict):
            return ("plugins", name, "_".join(parts[cut:]))
    return ("plugins", parts[0], "_".join(parts[1:]))


def _resolve(parts: list[str], struct: type) -> tuple[str, ...] | None:
    fields = {f.name: f.type for f in msgspec.structs.fields(struct)}
    for cut in range(len(parts), 0, -1):
        name = "_".join(parts[:cut])
        if name not in fields:
            continue
        rest = parts[cut:]
        kind = fields[name]
        if not rest:
            return (name,)
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            sub = _resolve(rest, kind)
            if sub is not None:
                return (name, *sub)
    return None


def _list_fields(struct: type, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The paths of fields that hold a list (written comma-separated in the environment)."""
    found: set[tuple[str, ...]] = set()
    for f in msgspec.structs.fields(struct):
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            found |= _list_fields(f.type, (*prefix, f.name))
        elif typing.get_origin(f.type) in (tuple, list):
            found.add((*prefix, f.name))
    return found


def _split(value: str) -> list[str]:
    """A list from the environment: comma-separated (`DEE_PLUGINS_DISABLED=a,b`), blanks dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _set(data: dict[str, Any], path: tuple[str, ...], value: str | list[str]) -> None:
    """Store the raw string; `from_dict` converts it to the field's type (so "2" stays a string
    where a string is expected)."""
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def find_project(cwd: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The project of the working directory (or `cwd`): `$DEE_CONFIG_DIR` when set, else `.`
    or `./config`, whichever first holds a `dee.toml`; None when there is none."""
    explicit = (os.environ if env is None else env).get("DEE_CONFIG_DIR")
    if explicit:
        if not Path(explicit).is_dir():
            raise ConfigError(f"DEE_CONFIG_DIR={explicit}: no such directory (plans, templates and scripts live there)")
        return Path(explicit)
    base = Path.cwd() if cwd is None else Path(cwd)
    for candidate in (base, base / "config"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    return None
