"""The Dockerfile read as the tests need it: its instructions by stage, the environment the
runtime stage sets, and the paths its COPY lines take from the build context.

Only the syntax the Dockerfile uses is understood (line continuations, comments, `ARG` defaults
in `FROM`, `ENV key=value` pairs, JSON and shell forms); anything else fails the parse, so a
change to the file that the tests would misread shows up as a test failure, not as a pass.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

INSTRUCTIONS = frozenset({"ARG", "FROM", "ENV", "RUN", "WORKDIR", "COPY", "LABEL", "USER", "EXPOSE", "HEALTHCHECK",
                          "ENTRYPOINT", "CMD"})  # fmt: skip


@dataclass
class Instruction:
    keyword: str
    text: str

    def words(self) -> list[str]:
        """The arguments: a JSON array as it is, otherwise split as a shell would."""
        if self.text.startswith("["):
            value = json.loads(self.text)
            assert isinstance(value, list), self.text
            return [str(v) for v in value]
        return shlex.split(self.text)


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]  # the ARGs before the first FROM, with their defaults
    stages: list[Stage]

    @classmethod
    def load(cls, path: Path) -> Dockerfile:
        args: dict[str, str] = {}
        stages: list[Stage] = []
        for keyword, text in _logical_lines(path.read_text(encoding="utf-8")):
            if keyword not in INSTRUCTIONS:
                raise ValueError(f"{path}: the tests do not know the instruction {keyword}")
            if keyword == "FROM":
                words = text.split()
                image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
                stages.append(Stage(image, words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
            elif not stages:
                if keyword != "ARG":
                    raise ValueError(f"{path}: {keyword} before the first FROM")
                name, _, default = text.partition("=")
                args[name] = default
            else:
                stages[-1].instructions.append(Instruction(keyword, text))
        return cls(args, stages)

    @property
    def runtime(self) -> Stage:
        return self.stages[-1]

    def runtime_env(self) -> dict[str, str]:
        """What the runtime stage's ENV lines set (`$NAME` of an earlier one expanded; others,
        such as the base image's PATH, are left as written)."""
        env: dict[str, str] = {}
        for instruction in self.runtime.all("ENV"):
            for pair in shlex.split(instruction.text):
                name, sep, value = pair.partition("=")
                if not sep:
                    raise ValueError(f"ENV {instruction.text!r}: only the key=value form is understood")
                env[name] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), value)
        return env

    def context_sources(self) -> list[str]:
        """Every path a COPY takes from the build context (COPY --from=... takes from a stage)."""
        sources: list[str] = []
        for stage in self.stages:
            for copy in stage.all("COPY"):
                words = copy.words()
                if any(w.startswith("--from=") for w in words):
                    continue
                sources += [w for w in words[:-1] if not w.startswith("--")]
        return sources


def _logical_lines(text: str) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):  # Docker drops these inside a continued line too
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        lines.append((keyword.upper(), rest.strip()))
        pending = ""
    if pending:
        raise ValueError("the Dockerfile ends inside a continued line")
    return lines
