"""The `dee` command. Each subcommand is a small function in this package; every failure is one
line on standard error, credentials removed, and a documented exit code:

- 0: done;
- 1: the check failed (an invalid plan, a replay that diverged, a broken chain, unhealthy);
- 2: bad usage or configuration (unknown options, an invalid config file, a config that
  contradicts the deployment, a database that needs `dee migrate`, an unknown run);
- 3: a service is unreachable (PostgreSQL or Redis down or refusing the connection, a wrong
  database name, role or password, a daemon that did not answer);
- 4: a replay of a run whose contact was erased (`dee contacts erase`): nothing to compare;
- 70: an internal error (a bug: its traceback is logged at debug level, `DEE_LOG_LEVEL=debug`);
- 130: interrupted (Ctrl-C); 141: the reader of the output went away (`dee schema | head`).

`--config FILE` may come before or after the subcommand.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

from dee.config import EngineConfig
from dee.errors import DeeError, EngineUnavailableError, ServiceUnavailableError
from dee.ops.cli import audit, contacts, deployment, project, runs, suppress, tools
from dee.ops.logs import configure
from dee.redact import redact_text

OK, CHECK_FAILED, USAGE, UNAVAILABLE, INTERNAL, INTERRUPTED, CLOSED_PIPE = 0, 1, 2, 3, 70, 130, 141
log = logging.getLogger("dee.cli")


def version() -> str:
    try:
        return metadata.version("dee")
    except metadata.PackageNotFoundError:  # a source tree without installed metadata
        return "unknown"


class Parser(argparse.ArgumentParser):
    """A usage error is one line (argparse prints the usage block first), and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"dee: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    # `--config` on the main parser and on every subcommand; SUPPRESS keeps a later one from
    # overwriting a value given earlier with its default
    common = Parser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="TOML configuration (default: $DEE_CONFIG, else the project's dee.toml)")  # fmt: skip
    parser = Parser(prog="dee", description="DEE, the Deterministic Execution Engine", parents=[common])
    parser.add_argument("--version", action="version", version=f"dee {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in (project, deployment, runs, audit, suppress, contacts, tools):
        module.add_commands(sub, common)
    return parser


def load_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig.load(getattr(args, "config", None))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args)
        configure(config.log, default_level="info" if args.command in ("run", "ingress") else "warning")
        return int(args.func(args, config))
    except BrokenPipeError:
        # the reader closed the pipe: stop quietly (and keep Python from complaining at exit)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED_PIPE
    except KeyboardInterrupt:
        return INTERRUPTED
    except (ServiceUnavailableError, EngineUnavailableError) as exc:
        return fail(str(exc), UNAVAILABLE)
    except DeeError as exc:
        return fail(str(exc), USAGE)
    except OSError as exc:
        return fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", USAGE)
    except Exception as exc:
        log.debug("internal error", exc_info=True)
        return fail(f"internal error: {type(exc).__name__}: {exc} (DEE_LOG_LEVEL=debug shows the traceback)", INTERNAL)


def fail(message: str, code: int) -> int:
    """One line on standard error: a multi-line message (a plan's problems) is joined with `;`."""
    lines = [line.strip().removeprefix("- ") for line in redact_text(message).strip().splitlines() if line.strip()]
    head, *rest = lines or [""]
    print(f"dee: {head} {'; '.join(rest)}".rstrip() if rest else f"dee: {head}", file=sys.stderr)
    return code
