"""Which files a `.dockerignore` keeps out of the build context, decided as Docker decides it.

A port of github.com/moby/patternmatcher (Apache License 2.0; `ignorefile.ReadAll`,
`PatternMatcher.MatchesOrParentMatches` and `Pattern.compile`, at commit 5a6d842), the code
BuildKit and the classic builder use: the last pattern that matches a path, or one of its parent
directories, decides; `!` lets a path back in; `*` and `?` never cross a `/`, `**` crosses any
number of directories. `.gitignore` rules differ (a bare name there matches at any depth), so a
gitignore library would give other answers.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

_ESCAPED = frozenset(".+()|{}$")


def clean(path: str) -> str:
    """Go's `filepath.Clean` for the slash-separated paths used here."""
    cleaned = posixpath.normpath(path) if path else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def read_patterns(text: str) -> list[str]:
    """`ignorefile.ReadAll`: comments and blank lines dropped, patterns cleaned, a leading `/`
    removed (the context's root is implied)."""
    patterns = []
    for number, raw in enumerate(text.splitlines()):
        line = raw.removeprefix("\ufeff") if number == 0 else raw
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append(("!" if invert else "") + pattern)
    return patterns


@dataclass
class Pattern:
    text: str
    exclusion: bool

    def __post_init__(self) -> None:
        self.kind, self.regexp = _compile(self.text)

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regexp is not None
        return self.regexp.match(path) is not None


def _compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
    """`Pattern.compile`: an exact, prefix (`dir/**`) or suffix (`**/name`) match where the
    pattern allows one, else a regular expression anchored at both ends."""
    regex, kind, i, n = "^", "exact", 0, len(pattern)
    position = 0  # how many characters the loop has started on (Go's `i`)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                if i == n:
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regex += ".*"
                        kind = "regexp"
                else:
                    regex += "(.*/)?"
                    kind = "regexp"
                if position == 0:
                    kind = "suffix"
            else:
                regex += "[^/]*"
                kind = "regexp"
        elif ch == "?":
            regex += "[^/]"
            kind = "regexp"
        elif ch in _ESCAPED:
            regex += "\\" + ch
        elif ch == "\\":
            if i < n:
                regex += "\\" + pattern[i]
                i += 1
                kind = "regexp"
            else:
                regex += "\\"  # a trailing backslash is kept as it is
        elif ch in "[]":
            regex += ch
            kind = "regexp"
        else:
            regex += ch
        position += 1
    return kind, re.compile(regex + "$") if kind == "regexp" else None


class DockerIgnore:
    def __init__(self, patterns: list[str]) -> None:
        self.patterns = []
        for text in patterns:
            text = clean(text.strip())
            exclusion = text.startswith("!")
            if exclusion and len(text) == 1:
                raise ValueError('illegal exclusion pattern: "!"')
            self.patterns.append(Pattern(text[1:] if exclusion else text, exclusion))

    @classmethod
    def load(cls, path: Path) -> DockerIgnore:
        return cls(read_patterns(path.read_text(encoding="utf-8")))

    def excludes(self, path: str) -> bool:
        """`MatchesOrParentMatches`: whether the slash-separated `path` stays out of the context."""
        path = clean(path)
        parent = posixpath.dirname(path) or "."
        parents = parent.split("/")
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:  # only a later pattern of the other kind can change the verdict
                continue
            match = pattern.match(path)
            if not match and parent != ".":
                match = any(pattern.match("/".join(parents[: k + 1])) for k in range(len(parents)))
            if match:
                matched = not pattern.exclusion
        return matched
