"""Rendering templates inside the kernel: sandboxed Jinja2 that cannot hurt the engine.

A template is content a customer's marketing team writes, and it runs inside a partition's
tick, so it must be unable to escape (the sandbox: no attribute of `_`, no mutation of what it
is given), unable to make a run non-deterministic (no `random`, no `lipsum`, nothing reads the
clock), and unable to stall or flood a partition. The last is a *budget*, counted, never
timed, so the same template with the same context always renders the same way or fails the
same way (a wall-clock limit would make replay depend on the machine):

- every loop iteration and every call counts one step, `MAX_STEPS` per render;
- the output is assembled as it is generated and may not pass `MAX_OUTPUT` characters; an
  operator or filter that could build a larger string in one go (`*`, `**`, `%`, `center`,
  `str.ljust`, a format width, ...) is refused before it allocates;
- `namespace()` (the only way to carry state across loop iterations) is not offered.

Over the budget the render fails with a `TemplateError`, which fails the step with the error
in its context: a broken template stops one run, never the partition. HTML is autoescaped: a
contact attribute holding `<script>` arrives as text.
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec
from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dee.errors import TemplateError
from dee.kernel.context import StepContext

MAX_STEPS = 20_000  # loop iterations and calls in one render
MAX_OUTPUT = 256 * 1024  # characters one render may produce
MAX_EXPONENT = 64  # `**` beyond this is refused (10 ** 10 ** 9 would never end)

# the filters a template may use: the deterministic ones of Jinja's set, each counted
FILTERS = (
    "abs", "attr", "batch", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "filesizeformat",
    "first", "float", "forceescape", "groupby", "int", "items", "join", "last", "length", "list", "lower", "map",
    "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "slice",
    "sort", "string", "striptags", "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode",
    "urlize", "wordcount", "xmlattr",
)  # fmt: skip
_WIDTH_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}  # str methods whose argument sizes the result
_FORMAT_WIDTH = re.compile(r"(\d{6,})")  # a width or precision of six digits or more in a format spec

_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("dee_render_budget")


class BudgetExceeded(TemplateError):
    """A template tried to do more than one render may (steps or output)."""


def _spend(n: int = 1) -> None:
    left = _budget.get()
    left[0] -= n
    if left[0] < 0:
        raise BudgetExceeded(f"the template ran more than {MAX_STEPS:,} loop iterations and calls")


def _check_size(size: int) -> None:
    if size > MAX_OUTPUT:
        raise BudgetExceeded(f"the template would produce more than {MAX_OUTPUT:,} characters")


def _counted(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        _spend()
        yield item


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Every `for` loop's iterable goes through the step counter."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "dee_counted", [], [], None, None, lineno=loop.lineno)
        return tree

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        name = getattr(__obj, "__name__", "")
        if isinstance(getattr(__obj, "__self__", None), str):
            if name in _WIDTH_METHODS and args and isinstance(args[0], int):
                _check_size(args[0])
            elif name == "replace" and len(args) >= 2:
                _check_size(len(__obj.__self__) * max(1, len(str(args[1]))))
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` is wrapped where it is looked up: its widths are checked there."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format(value.__self__)
        return wrapped

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _spend()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _check_size(len(seq) * times)
        elif operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise BudgetExceeded(f"an exponent above {MAX_EXPONENT} is refused")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return super().call_binop(context, operator, left, right)


def _check_format(template: str) -> None:
    if _FORMAT_WIDTH.search(template):
        raise BudgetExceeded("a format width or precision of six digits or more is refused")


def _counted_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _spend()
        result = function(*args, **kwargs)
        if isinstance(result, str):
            _check_size(len(result))
        return result

    return wrapper


def _environment(autoescape: bool) -> _Sandbox:
    env = _Sandbox(undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=True)
    env.filters = {name: _counted_filter(env.filters[name]) for name in FILTERS}
    env.filters["dee_counted"] = _counted
    env.globals = {"range": env.globals["range"], "dict": env.globals["dict"]}  # no random, no namespace
    return env


TEXT = _environment(autoescape=False)
HTML = _environment(autoescape=True)


@functools.lru_cache(maxsize=4096)
def compiled(source: str, html: bool = False) -> Any:
    """The compiled template (memoised by source: the same source is the same template)."""
    return (HTML if html else TEXT).from_string(source)


def check(source: str, what: str, html: bool = False) -> str | None:
    """A template's syntax problem, or None (what plan validation asks of every template)."""
    try:
        compiled(source, html)
    except Exception as exc:  # jinja raises many types; any means "this will not render"
        return f"{what}: {type(exc).__name__}: {exc}"
    return None


def render(source: str, namespace: dict[str, Any], what: str, html: bool = False) -> str:
    """Render with `namespace` as the template's whole context (it should start with the
    environment's globals, see `globals_of`), within the budget.

    `Template.render` would copy the namespace and merge the globals into it on every call; an
    email renders several times from one namespace, so its renders share it (a template cannot
    write to it: assignments go to the render's own scope, and the sandbox makes values
    immutable)."""
    token = _budget.set([MAX_STEPS])
    try:
        template = compiled(source, html)
        parts: list[str] = []
        size = 0
        for chunk in template.root_render_func(template.new_context(namespace, shared=True)):
            size += len(chunk)
            _check_size(size)
            parts.append(chunk)
        return "".join(parts)
    except TemplateError as exc:
        raise TemplateError(f"{what}: {exc}") from exc
    except Exception as exc:  # jinja raises many types; all mean "this step cannot render"
        raise TemplateError(f"{what}: {type(exc).__name__}: {exc}") from exc
    finally:
        _budget.reset(token)


def globals_of() -> dict[str, Any]:
    """The globals every render namespace starts with."""
    return dict(TEXT.globals)


def namespace_of(ctx: StepContext, **extra: Any) -> dict[str, Any]:
    """The render namespace of a step: the environment's globals, the run's variables, then the
    names every template can use (which win over variables of the same name): `contact` (its
    attributes and fields), `variables`, `sender`, `previous_step`, `run`, and `extra`."""
    contact = {**ctx.contact.attributes, **msgspec.to_builtins(ctx.contact)}
    previous = msgspec.to_builtins(ctx.previous_result) if ctx.previous_result else {}
    return {
        **TEXT.globals,
        **ctx.variables,
        "contact": contact,
        "variables": dict(ctx.variables),
        "sender": dict(ctx.settings.get("email", {}).get("sender", {})),
        "previous_step": previous,
        "run": {"id": ctx.run_id, "plan_id": ctx.plan_id, "plan_version": ctx.plan_version, "tick": ctx.step_tick},
        **extra,
    }
