"""The condition language of branches and exit conditions (SPEC 3.3): CEL, checked and compiled once.

Conditions decide which way a run goes, so they must give the same answer on every replay: they
are CEL (compiled by the `cel` package, never `eval`), may name only an allowlisted set of
variables and functions, and read nothing but an immutable `ConditionSnapshot`. Every problem a
static check can see is reported at plan creation (`condition_problems`), so evaluation can only
fail on facts of the snapshot, such as a missing contact attribute.

The seed syntax is CEL plus three words CEL lacks: `and`, `or`, `not`. A small tokenizer rewrites
them (never inside string literals, never as field names after a `.`). `not` keeps the meaning
it has in Python and SQL, binding looser than comparisons: `not call.outcome("c") == "answered"`
becomes `!(call.outcome("c") == "answered")`. `!` keeps CEL's tight binding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import cel
import msgspec

from dee.errors import ConditionError

__all__ = ["ANY_STEP", "CompiledCondition", "ConditionSnapshot", "ConditionSyntaxError",
           "VisibleEvent", "compile_condition", "condition_problems"]

ANY_STEP = "@any"
"""What the CEL name `any` is bound to; `@` can never start a step id, so it cannot collide."""


class VisibleEvent(msgspec.Struct, frozen=True):
    """A channel event the run can see at this tick, e.g. ("email.opened", "initial-email", 7)."""

    type: str
    step_id: str | None
    tick: int


class ConditionSnapshot(msgspec.Struct, frozen=True):
    """Everything a condition may read. Nothing else (clock, store, network) is reachable."""

    contact: dict[str, Any]
    variables: dict[str, Any]
    events: tuple[VisibleEvent, ...]
    call_outcomes: dict[str, str]
    tick: int


class ConditionSyntaxError(ValueError):
    """A condition that cannot be compiled: bad syntax or a name outside the allowlist."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"condition {source!r}: {message}")
        self.source = source
        self.message = message


_EVENT_TYPES = {"hasReply": "email.replied", "hasOpen": "email.opened",
                "hasClick": "email.clicked", "hasBounce": "email.bounced"}
_METHODS = {**dict.fromkeys((*_EVENT_TYPES, "count"), "events"), "outcome": "call"}
_VARIABLES = frozenset({"events", "call", "contact", "variables", "any", "tick"})
_BUILTINS = frozenset({"size", "has", "contains", "startsWith", "endsWith",
                       "int", "string", "double", "bool"})
_OPERATORS = frozenset({"_&&_", "_||_", "!_", "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_",
                        "_+_", "_-_", "_*_", "_/_", "_%_", "-_", "_[_]", "@in", "_?_:_"})
_FUNCTIONS = _OPERATORS | _BUILTINS | _METHODS.keys()
_PRUNABLE = ("contact", "variables")  # maps bound with only the key paths a condition reads

_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<str>(?:[rR][bB]?|[bB][rR])(?:'''.*?'''|\"\"\".*?\"\"\"|'[^'\n]*'|"[^"\n]*")
          | [bB]?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"
                   |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
  | (?P<num>0[xX][0-9a-fA-F]+[uU]?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|.)
""", re.VERBOSE | re.DOTALL)
_CEL_ERROR = re.compile(r"<input>:\d+:(?P<col>\d+): (?:Syntax error: )?(?P<why>.*?)(?: expecting .*)?$",
                        re.MULTILINE)


class _Tok(NamedTuple):
    kind: str  # ws, str, num, ident, op
    text: str
    word: bool = False  # an `and`/`or`/`not` used as an operator, not as a field name

    def opens(self) -> int:  # +1 for an opening bracket, -1 for a closing one, else 0
        return (self.text in "([{") - (self.text in ")]}") if self.kind == "op" else 0


def _tokenize(source: str) -> list[_Tok]:
    """Split CEL text into tokens; string literals stay whole so nothing inside them is touched."""
    toks: list[_Tok] = []
    prev = ""
    for m in _TOKEN.finditer(source):
        kind, text = m.lastgroup or "op", m.group()
        toks.append(_Tok(kind, text, kind == "ident" and text in ("and", "or", "not") and prev != "."))
        prev = text if kind != "ws" else prev
    return toks


def _normalize(toks: list[_Tok]) -> str:
    """Rewrite `and`/`or` to `&&`/`||` and `not X` to `!(X)`, X ending before `&&`/`||`/`?`/`:`."""
    out: list[str] = []
    i = 0
    while i < len(toks):
        if not (toks[i].word and toks[i].text == "not"):
            out.append({"and": "&&", "or": "||"}[toks[i].text] if toks[i].word else toks[i].text)
            i += 1
            continue
        end, depth = i + 1, 0
        while end < len(toks):
            t = toks[end]
            if depth == 0 and (t.opens() < 0 or t.text in ("&&", "||", "?", ":", ",")
                               or (t.word and t.text != "not")):
                break
            depth += t.opens()
            end += 1
        while end > i + 1 and toks[end - 1].kind == "ws":
            end -= 1  # leave the space before `&&` where it was
        out.append("!(" + _normalize(toks[i + 1:end]).strip() + ")")
        i = end
    return "".join(out)


class _Analysis(NamedTuple):
    cel_source: str
    program: cel.Program | None
    problems: list[str]
    steps: tuple[str, ...] = ()
    is_default: bool = False
    paths: dict[str, frozenset[tuple[str, ...]]] = {}  # noqa: RUF012 (a msgspec default: copied per instance)


def _receiver(toks: list[_Tok], i: int) -> str | None:
    """The root variable a method call at `toks[i]` is made on (`events` in events.hasReply)."""
    if i >= 2 and toks[i - 1].text == "." and toks[i - 2].kind == "ident":
        return toks[i - 2].text if i == 2 or toks[i - 3].text != "." else None
    return None


def _argument(toks: list[_Tok], open_paren: int) -> _Tok | None:
    """The argument of the call opened at `open_paren` if it is a single token, else None."""
    depth, j = 0, open_paren + 1
    while j < len(toks) and (depth or toks[j].text != ")"):
        depth += toks[j].opens()
        j += 1
    return toks[open_paren + 1] if j == open_paren + 2 else None


def _field_path(toks: list[_Tok], root: int) -> tuple[str, ...]:
    """The chain of field selections after `toks[root]`, e.g. ("attributes", "tier")."""
    path: list[str] = []
    j = root + 1
    while (j + 1 < len(toks) and toks[j].text == "." and toks[j + 1].kind == "ident"
           and (j + 2 == len(toks) or toks[j + 2].text != "(")):
        path.append(toks[j + 1].text)
        j += 2
    return tuple(path)


def _check_calls(toks: list[_Tok], step_ids: Collection[str] | None) -> tuple[list[str], set[str]]:
    """Receivers, step-id arguments and the placement of `events`, `call` and `any`."""
    problems: list[str] = []
    steps: set[str] = set()
    valid_any: set[int] = set()
    for i, tok in enumerate(toks[:-1]):
        if tok.text not in _METHODS or toks[i + 1].text != "(":
            continue
        owner, call = _METHODS[tok.text], f"{_METHODS[tok.text]}.{tok.text}"
        if _receiver(toks, i) != owner:
            problems.append(f"`{tok.text}` must be called on `{owner}`, as {call}(...)")
            continue
        arg = _argument(toks, i + 1)
        if arg is not None and arg.text == "any" and tok.text in _EVENT_TYPES:
            valid_any.add(i + 2)
            continue
        value = cel.evaluate(arg.text) if arg is not None and arg.kind == "str" else None
        if not isinstance(value, str):
            wanted = "an event type in quotes" if tok.text == "count" else "a step id in quotes"
            problems.append(f"the argument of {call}(...) must be {wanted}"
                            + (" or `any`" if tok.text in _EVENT_TYPES else ""))
        elif tok.text != "count":
            steps.add(value)
            if step_ids is not None and value not in step_ids:
                problems.append(f"{call}({value!r}) names unknown step {value!r}")
    for i, tok in enumerate(toks):
        if tok.kind != "ident" or (i > 0 and toks[i - 1].text == "."):
            continue
        if tok.text in ("events", "call") and not (
                i + 3 < len(toks) and toks[i + 1].text == "." and toks[i + 3].text == "("
                and _METHODS.get(toks[i + 2].text) == tok.text):
            names = ", ".join(f"{tok.text}.{m}" for m, r in _METHODS.items() if r == tok.text)
            problems.append(f"`{tok.text}` can only be used to call {names}")
        if tok.text == "any" and i not in valid_any:
            problems.append("`any` can only be the argument of events."
                            + "/".join(_EVENT_TYPES) + "(...)")
    return problems, steps


def _analyze(source: str, step_ids: Collection[str] | None, allow_default: bool) -> _Analysis:
    """Every static problem of `source`; `step_ids=None` skips the check against a plan."""
    cel_source = _normalize(_tokenize(source)).strip()
    toks = [t for t in _tokenize(cel_source) if t.kind != "ws"]
    if not toks:
        return _Analysis(cel_source, None, ["the condition is empty"])
    if any(t.kind == "op" and t.text in "'\"" for t in toks):
        return _Analysis(cel_source, None, ["a string literal is not closed"])
    try:
        program = cel.compile(cel_source)
    except ValueError as exc:
        found = _CEL_ERROR.search(str(exc))
        reason = f"{found['why']} at column {found['col']} of {cel_source!r}" if found else str(exc)
        return _Analysis(cel_source, None, [f"does not parse: {reason}"])

    problems: list[str] = []
    is_default = [t.text for t in toks] == ["default"]
    if is_default and not allow_default:
        problems.append("`default` is only allowed as the final condition of a branch")
    if "default" in program.variables() and not is_default:
        problems.append("`default` must be the whole condition, not part of a bigger expression")
    unknown = set(program.variables()) - _VARIABLES - {"default"}
    problems += [f"unknown variable `{name}`" for name in sorted(unknown)]
    called = {t.text for i, t in enumerate(toks[:-1]) if t.kind == "ident" and toks[i + 1].text == "("}
    bad = (set(program.functions()) | called) - _FUNCTIONS
    if called - _FUNCTIONS:  # then hide what a macro expands to, e.g. `@not_strictly_false`
        bad = {name for name in bad if not name.startswith("@")}
    problems += [f"function `{name}` is not allowed" for name in sorted(bad)]
    call_problems, steps = _check_calls(toks, step_ids)
    paths = {root: frozenset(_field_path(toks, i) for i, t in enumerate(toks)
                             if t.text == root and (i == 0 or toks[i - 1].text != "."))
             for root in _PRUNABLE}
    return _Analysis(cel_source, program, list(dict.fromkeys(problems + call_problems)),
                     tuple(sorted(steps)), is_default, paths)


def condition_problems(source: str, step_ids: Collection[str], *, allow_default: bool) -> list[str]:
    """Every problem of one condition as a sentence, for `PlanValidationError`; [] when fine."""
    return _analyze(source, step_ids, allow_default).problems


def compile_condition(source: str) -> CompiledCondition:
    """Check and compile once; raise `ConditionSyntaxError` on every problem a plan cannot fix.

    Step ids are not checked here (that needs the plan: use `condition_problems`), and `default`
    is accepted because only the caller knows whether it stands last in a branch.
    """
    analysis = _analyze(source, None, allow_default=True)
    if analysis.problems:
        raise ConditionSyntaxError(source, "; ".join(analysis.problems))
    return CompiledCondition(source, analysis)


def _prune(value: Any, paths: Collection[tuple[str, ...]]) -> Any:
    """`value` cut down to the key paths a condition selects. Exact for field selection and
    has() (a key is kept iff it is there); worth it because converting a map into CEL costs
    a few µs per map and per key, more than the rest of an evaluation."""
    if () in paths or not isinstance(value, dict):
        return value
    heads: dict[str, list[tuple[str, ...]]] = {}
    for path in sorted(paths):  # a fixed order: no set iteration reaches the evaluation
        heads.setdefault(path[0], []).append(path[1:])
    return {key: _prune(value[key], rest) for key, rest in heads.items() if key in value}


def _has_event(kind: str) -> Callable[[ConditionSnapshot], Callable[[Any, str], bool]]:
    return lambda s: lambda _receiver, step_id: any(
        e.type == kind and step_id in (ANY_STEP, e.step_id) for e in s.events)


# The custom CEL functions, each closed over one snapshot. CEL passes the receiver first; it is
# always null (`events`, `call`), since `_check_calls` allows no other receiver.
_BIND: dict[str, Callable[[ConditionSnapshot], Callable[..., Any]]] = {
    **{name: _has_event(kind) for name, kind in _EVENT_TYPES.items()},
    "count": lambda s: lambda _receiver, event_type: sum(e.type == event_type for e in s.events),
    "outcome": lambda s: lambda _receiver, step_id: s.call_outcomes.get(step_id),
}


_DIRECT_EVENT = re.compile(r'events\.(hasReply|hasOpen|hasClick|hasBounce)\((?:(any)|"([^"\\]*)")\)')
_DIRECT_FLAG = re.compile(r"contact\.(unsubscribed|bounced)")


def _direct_form(cel_source: str) -> Callable[[ConditionSnapshot], bool] | None:
    """The most common conditions, evaluated without CEL: `events.hasReply(any)`,
    `events.hasOpen("step")` (any of the four event tests) and `contact.unsubscribed` or
    `contact.bounced` alone. Each gives exactly what CEL gives (a property test compares them);
    they are checked on every touch of every run, where CEL's binding cost dominated."""
    source = cel_source.strip()
    if match := _DIRECT_EVENT.fullmatch(source):
        kind = _EVENT_TYPES[match.group(1)]
        step_id = ANY_STEP if match.group(2) else match.group(3)
        if step_id == ANY_STEP:
            return lambda s: any(e.type == kind for e in s.events)
        return lambda s: any(e.type == kind and e.step_id == step_id for e in s.events)
    if match := _DIRECT_FLAG.fullmatch(source):
        flag = match.group(1)
        return lambda s: s.contact[flag] is True
    return None


class CompiledCondition:
    """A checked, compiled condition; `evaluate` is a pure function of the snapshot."""

    __slots__ = (
        "_direct",
        "_functions",
        "_paths",
        "_program",
        "_roots",
        "cel_source",
        "is_default",
        "referenced_steps",
        "source",
    )

    source: str
    cel_source: str
    referenced_steps: tuple[str, ...]
    is_default: bool
    _program: cel.Program
    _roots: tuple[str, ...]
    _paths: dict[str, frozenset[tuple[str, ...]]]
    _functions: tuple[str, ...]
    _direct: Callable[[ConditionSnapshot], bool] | None

    def __init__(self, source: str, analysis: _Analysis) -> None:
        program = analysis.program
        assert program is not None, "compile_condition builds these only from clean analyses"
        for name, value in [
            ("source", source), ("cel_source", analysis.cel_source),
            ("referenced_steps", analysis.steps), ("is_default", analysis.is_default),
            # sorted tuples: bindings are built in one fixed order (no set iteration in the kernel)
            ("_program", program), ("_roots", tuple(sorted(set(program.variables())))),
            ("_paths", analysis.paths), ("_functions", tuple(sorted(set(program.functions()) & _BIND.keys()))),
            ("_direct", _direct_form(analysis.cel_source)),
        ]:
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"CompiledCondition is immutable (tried to set {name!r})")

    def __repr__(self) -> str:
        return f"CompiledCondition({self.source!r})"

    def _bindings(self, snapshot: ConditionSnapshot) -> dict[str, Any]:
        """Only the names this condition reads: converting values into CEL is the main cost."""
        bindings: dict[str, Any] = {name: _BIND[name](snapshot) for name in self._functions}
        for root in self._roots:
            if root in _PRUNABLE:
                bindings[root] = _prune(getattr(snapshot, root), self._paths[root])
            else:
                bindings[root] = {"tick": snapshot.tick, "any": ANY_STEP}.get(root)
        return bindings

    def evaluate(self, snapshot: ConditionSnapshot) -> bool:
        """True or False for this snapshot; `ConditionError` if CEL fails or the result is no bool."""
        if self.is_default:
            return True
        if self._direct is not None:
            return self._direct(snapshot)
        try:
            result = self._program.execute(self._bindings(snapshot))
        except Exception as exc:  # the binding raises KeyError, TypeError, RuntimeError, ...
            reason = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ConditionError(f"condition {self.source!r} failed: {reason}") from exc
        if not isinstance(result, bool):
            raise ConditionError(f"condition {self.source!r} gave {type(result).__name__} "
                                 f"{result!r}, not true or false")
        return result
