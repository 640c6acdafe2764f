"""DEE, the Deterministic Execution Engine: the public API (SPEC section 3) and nothing else."""

from dee.config import (
    AuditConfig,
    ChannelsConfig,
    ClientConfig,
    EmailChannelConfig,
    EngineConfig,
    MetricsConfig,
    PluginsConfig,
    SchedulerConfig,
    SenderConfig,
    VoiceChannelConfig,
)
from dee.engine import Engine
from dee.errors import (
    AlreadyEnrolledError,
    AuditChainError,
    ClockModeError,
    ConditionError,
    ConfigError,
    ContactSuppressedError,
    DeeError,
    EngineUnavailableError,
    InvalidTransitionError,
    PlanFileError,
    PlanProblem,
    PlanValidationError,
    PluginError,
    RunNotFoundError,
    StartInPastError,
    TemplateError,
    UnknownPlanError,
)
from dee.kernel.audit import AuditEntry, ChainVerification
from dee.kernel.contact import Contact
from dee.kernel.replay import ReplayDiff, ReplayResult, ReplayStep
from dee.kernel.state import StepResult
from dee.kernel.timeline import TimelineEntry
from dee.plan import steps, transitions
from dee.plan.model import Condition, Duration, Edge, ExitCondition, Plan, Step, Tracking, Voicemail
from dee.project.plans import create_plan, load_plan
from dee.records import BulkError, BulkResult, ConsentRecord, ExecutionRun, RunPage, Suppression
from dee.routing import partition_for

__all__ = [
    "AlreadyEnrolledError",
    "AuditChainError",
    "AuditConfig",
    "AuditEntry",
    "BulkError",
    "BulkResult",
    "ChainVerification",
    "ChannelsConfig",
    "ClientConfig",
    "ClockModeError",
    "Condition",
    "ConditionError",
    "ConfigError",
    "ConsentRecord",
    "Contact",
    "ContactSuppressedError",
    "DeeError",
    "Duration",
    "Edge",
    "EmailChannelConfig",
    "Engine",
    "EngineConfig",
    "EngineUnavailableError",
    "ExecutionRun",
    "ExitCondition",
    "InvalidTransitionError",
    "MetricsConfig",
    "Plan",
    "PlanFileError",
    "PlanProblem",
    "PlanValidationError",
    "PluginError",
    "PluginsConfig",
    "ReplayDiff",
    "ReplayResult",
    "ReplayStep",
    "RunNotFoundError",
    "RunPage",
    "SchedulerConfig",
    "SenderConfig",
    "StartInPastError",
    "Step",
    "StepResult",
    "Suppression",
    "TemplateError",
    "TimelineEntry",
    "Tracking",
    "UnknownPlanError",
    "VoiceChannelConfig",
    "Voicemail",
    "create_plan",
    "load_plan",
    "partition_for",
    "steps",
    "transitions",
]  # fmt: skip
